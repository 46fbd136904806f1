"""Model modules on DFT data."""
