"""Imaging models: U-net ensembles for micrograph segmentation."""
