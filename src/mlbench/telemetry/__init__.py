"""Event records, their sinks, and the environment record."""
