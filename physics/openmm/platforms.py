r"""Which OpenMM platform evaluates a system fastest, and its properties per worker.

``platform="auto"`` follows a rule measured on 2 cores (OpenMM 8.6.1, copies of alanine
dipeptide with ``NoCutoff``, one energy + force evaluation per call, CPU platform with one
thread):

=========  ==============================  ==============================
atoms      vacuum (amber99sbildn)          implicit solvent (+ amber99_obc)
           Reference / CPU, evals/s        Reference / CPU, evals/s
=========  ==============================  ==============================
22         46 600 / 6 400                  17 000 / 4 000
44         19 900 / 6 200                  3 070 / 2 650
66         12 100 / 5 600                  1 700 / 2 010
110        2 990 / 3 730                   740 / 1 120
220        1 630 / 2 000                   154 / 350
1100       37 / 162                        7 / 19
=========  ==============================  ==============================

The CPU platform pays a fixed cost per call (thread wake-up, neighbour bookkeeping), so
Reference wins for small systems: up to :data:`REFERENCE_MAX_ATOMS` atoms (96), or
:data:`REFERENCE_MAX_ATOMS_GB` (48) when the system has a generalized-Born force. Larger
systems get the fastest platform available by OpenMM's own speed rating (CUDA, then OpenCL,
then CPU). In worker processes the CPU platform runs one thread per worker (the workers are
the parallelism); in-process it keeps OpenMM's default.
"""

from __future__ import annotations

from collections.abc import Mapping

import openmm

from manifoldflows.errors import InvalidInput

__all__ = [
    "REFERENCE_MAX_ATOMS",
    "REFERENCE_MAX_ATOMS_GB",
    "available_platforms",
    "choose_platform",
    "platform_properties",
]

#: Largest system without generalized-Born forces for which ``"auto"`` picks Reference.
REFERENCE_MAX_ATOMS = 96
#: The same with a generalized-Born (implicit solvent) force.
REFERENCE_MAX_ATOMS_GB = 48


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms that load here (e.g. ``["Reference", "CPU"]``)."""
    return [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]


def _has_gb_force(system: openmm.System) -> bool:
    names = (type(force).__name__ for force in system.getForces())
    return any("GB" in name or "GeneralizedKirkwood" in name for name in names)


def choose_platform(system: openmm.System, platform: str = "auto", who: str = "OpenMM") -> str:
    """The platform name to use: ``platform`` itself, or the rule above for ``"auto"``.

    Arguments:
        system: the OpenMM system.
        platform: ``"auto"`` or a platform name.
        who: name used in errors.

    Returns:
        A platform name that is available here.

    Example:
        >>> system = openmm.System()
        >>> for _ in range(22):
        ...     _ = system.addParticle(1.0)
        >>> choose_platform(system)
        'Reference'
    """
    names = available_platforms()
    if platform != "auto":
        if platform not in names:
            raise InvalidInput(
                f"{who}: expected platform 'auto' or one of {names}, got {platform!r}"
            )
        return platform
    limit = REFERENCE_MAX_ATOMS_GB if _has_gb_force(system) else REFERENCE_MAX_ATOMS
    if system.getNumParticles() <= limit:
        return "Reference"
    return max(names, key=lambda name: openmm.Platform.getPlatformByName(name).getSpeed())


def platform_properties(
    platform: str, user: Mapping[str, str] | None = None, *, in_worker: bool
) -> dict[str, str]:
    """Platform properties: one CPU thread per worker process, then the user's overrides.

    Example:
        >>> platform_properties("CPU", in_worker=True)
        {'Threads': '1'}
        >>> platform_properties("CPU", {"Threads": "2"}, in_worker=True)
        {'Threads': '2'}
    """
    properties = {"Threads": "1"} if platform == "CPU" and in_worker else {}
    properties.update({str(k): str(v) for k, v in (user or {}).items()})
    return properties
