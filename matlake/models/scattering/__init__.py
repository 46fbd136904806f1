"""Coherent-scattering model modules: the differentiable forward model, simulated
dynamical systems and neural-ODE dynamics learned from diffraction time series.

Pure science on numpy arrays and torch tensors; the platform-side ``*_lake.py``
modules commit what they return (see docs/architecture.md).
"""
