"""Launchers: start workers, watch them, stop them all on failure."""
