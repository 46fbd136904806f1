"""Materials property datasets and screening (issue #10): tabular ingestion, descriptors, models.

Pure science on numpy arrays and pandas frames (energies in eV, radii in Angstrom):
elemental property tables (``elements``), composition / site / defect descriptors
(``descriptors``), multi-target regressors with recorded CV folds (``regressors``),
multi-fidelity strategies (``multifidelity``) and the impurity transition levels
(``defects``); the platform commits what they return (see docs/architecture.md).
"""
