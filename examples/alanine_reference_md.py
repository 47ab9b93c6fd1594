"""Generate the MD + umbrella-sampling reference of alanine dipeptide and print its estimates.

The command line of :func:`physics.systems.reference.main` (same arguments as
``python -m physics.systems.reference``; ``--help`` lists them). It

1. runs plain Langevin MD with OpenMM (``LangevinMiddleIntegrator``, 1 fs, friction 1/ps,
   flexible bonds, Reference platform; minimisation and 100 ps of equilibration first; a frame
   every 1 ps), one independent run per ``--md-seeds`` entry,
2. runs umbrella sampling along phi (24 periodic harmonic windows, MBAR), one sweep per
   ``--umbrella-seeds`` entry, the tasks in ``--processes`` worker processes,
3. estimates F(alpha_R) - F(beta) (plain MD, block averages; umbrella sampling, bootstrap) and
   F(phi > 0) - F(phi < 0) (umbrella sampling), in kT, with standard errors,
4. writes the reference file (default: the user cache directory, where
   :func:`physics.systems.reference.load_reference` finds it) and prints the table.

The shipped amber99sbildn/implicit reference was generated with::

    nice -n 19 .venv/bin/python -m physics.systems.reference --forcefield amber99sbildn \\
        --solvent implicit --md-ps 10000 --md-seeds 1 2 --umbrella-seeds 11 12 --processes 2 \\
        --output physics/systems/data/alanine_dipeptide_amber99sbildn_implicit_reference.npz

(about 15 minutes on 2 idle cores, 34 on the busy ones it ran on; its metadata records the
command and the wall times). The smaller amber96 reference that ships too (10 minutes)::

    nice -n 19 .venv/bin/python examples/alanine_reference_md.py --forcefield amber96 \\
        --md-ps 3000 --window-ps 100 --bootstrap-block-ps 20 --train-stride 2 --test-stride 3 \\
        --output physics/systems/data/alanine_dipeptide_amber96_implicit_reference.npz

Without ``--output`` the file goes into the user cache, where ``load_reference`` finds it.
"""

from __future__ import annotations

from physics.systems.reference import main

if __name__ == "__main__":
    main(prog="python examples/alanine_reference_md.py")
