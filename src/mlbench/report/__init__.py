"""Reports over runs and sweeps: statistics per configuration, figures, one HTML page."""
