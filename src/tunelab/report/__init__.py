"""Tables and reports from evaluation results."""
