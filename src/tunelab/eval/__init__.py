"""Evaluation: model-side requests, tasks, and metrics (see metrics.py)."""
