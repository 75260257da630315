"""Datasets: synthetic phantoms, CheXpert ingestion, datalists and shared transforms."""
