"""Orchestration of the four bundles into the end-to-end DoLL pipeline."""
