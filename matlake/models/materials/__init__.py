"""Materials descriptors and regressors: elemental property tables, composition / site /
defect descriptors, multi-target regressors with recorded CV folds, multi-fidelity
strategies and the impurity transition-level check.

Pure science on numpy arrays and pandas frames (energies in eV, radii in Angstrom); the
platform commits what they return (see docs/architecture.md).
"""
