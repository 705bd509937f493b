"""Bridges from tunelab models to other evaluation frameworks."""
