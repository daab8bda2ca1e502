"""The master: REST API, persistent results database, (later) scheduler and dashboard."""
