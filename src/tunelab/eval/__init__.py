"""Evaluation: tasks (YAML), requests (generate, log-likelihood, rolling, task heads), metrics.

Importing the package registers the log-likelihood metrics (multiple_choice, bits_per_byte,
word_perplexity) next to the text metrics, so every entry point (`tunelab score`, tasks)
sees the same registry.
"""

from tunelab.eval import metrics_lm as _metrics_lm  # noqa: F401  (registers metrics)
