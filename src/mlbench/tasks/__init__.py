"""Benchmark tasks, one module each (see registry.TASKS)."""
