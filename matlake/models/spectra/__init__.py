"""Spectra model modules: processing, featurizers, models, luminescence peak fits.

Pure science on numpy arrays (energies in eV, wavelengths in nm); the platform
commits what they return (see docs/architecture.md).
"""
