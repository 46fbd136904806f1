"""Coherent X-ray scattering: simulation, classification, neural-ODE dynamics (issue #12)."""
