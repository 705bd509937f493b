"""The one training loop, its schedules and its checkpoints."""
