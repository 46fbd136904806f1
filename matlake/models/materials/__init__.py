"""Materials property datasets and screening (issue #10): tabular ingestion, descriptors, models."""
