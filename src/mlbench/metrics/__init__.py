"""Metrics computed from sums that can be all-reduced exactly across ranks."""
