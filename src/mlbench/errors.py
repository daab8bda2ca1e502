"""Typed errors for user mistakes.

The CLI prints any :class:`MlbenchError` as one line and exits with code 2; everything else is a
bug and keeps its traceback. Keeping user errors typed is what lets us tell the two apart.
"""


class MlbenchError(Exception):
    """A problem the user can fix (bad input, missing data, impossible request)."""


class ConfigError(MlbenchError, ValueError):
    """Invalid configuration: unknown key, wrong type, value out of range."""


class DataError(MlbenchError):
    """A dataset is missing, incomplete or corrupt; we refuse to train on it."""
