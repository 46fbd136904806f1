"""Micrographs: segmentation ensembles with uncertainty (issue #11)."""
