"""The recipes that read top to bottom: train, quickstart and sweep."""
