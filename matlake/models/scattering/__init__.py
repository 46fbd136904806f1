"""Coherent X-ray scattering: simulation, classification, neural-ODE dynamics (issue #12).

Pure science on numpy arrays and torch tensors (the differentiable forward model,
simulated dynamical systems, neural-ODE dynamics learned from diffraction time
series); the platform-side ``*_lake.py`` modules commit what they return (see
docs/architecture.md).
"""
