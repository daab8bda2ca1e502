"""The one training loop, its timer and learning-rate schedules."""
