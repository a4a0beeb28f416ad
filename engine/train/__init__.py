"""Training, evaluation, dataset preparation and synthetic data."""
