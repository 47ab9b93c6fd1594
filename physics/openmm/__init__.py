"""OpenMM bridge and torch force field."""
