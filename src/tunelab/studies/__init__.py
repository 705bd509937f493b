"""Comparisons of systems on the same items with paired statistics: baselines, forgetting, robustness, bias and error analysis."""
