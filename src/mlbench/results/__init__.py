"""Run summaries: building, versioning and reading result.json."""
