"""Evaluation: tasks (YAML), output types (generate, multiple choice, rolling log-likelihood,
task heads), metrics, few-shot prompts, comparisons of two evaluations.

The metric registry (`tunelab.eval.metrics`) holds the text and the log-likelihood metrics
alike, so every entry point (`tunelab score`, tasks) sees the same metrics.
"""
