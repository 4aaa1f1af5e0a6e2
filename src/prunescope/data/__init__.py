"""Evaluation datasets: archive fetching, offline stand-ins, hub and local sources, all normalised to one record."""
