"""Experiments that test the method's claims; each runs the project's bundles as users would."""
