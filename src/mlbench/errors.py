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


class DownloadError(DataError):
    """Fetching a dataset file failed: the network, the server, or a checksum that did not match.

    Its own type so a caller (the CLI, a test) can tell "the internet let us down" from "the files
    on disk are corrupt"; the message always names the URL so the user can retry or fetch by hand.
    """


class RunDirError(MlbenchError):
    """The run directory cannot be created or written (a read-only or missing location, a path
    through a regular file, permissions, a full disk).

    Typed so the launcher says which path and which OS error before any worker starts, instead of
    a traceback — and so the master can show that line as the run's reason.
    """


class RecordError(MlbenchError, ValueError):
    """An event record breaks the record contract (DESIGN §4, ``mlbench.limits``): unknown kind,
    a value that is not a number, a name or unit too long or with control characters, an integer
    out of range.

    Raised by the writer at the emitting call, so the code that made the record (often a
    plug-in) is in the traceback; the master would refuse the record's whole upload batch.
    A ``ValueError`` too, which is what the writer raised before it had its own type.
    """


class CheckpointError(MlbenchError):
    """A checkpoint cannot continue this run: it is from another task, another resolved config
    or another world size (the message names what differs), or its files are unreadable.

    Typed because resuming from the wrong state would not fail loudly — it would train on, and
    the run's numbers would silently mix two experiments.
    """


class ResumeError(MlbenchError):
    """``mlbench run --resume RUN_DIR`` cannot continue that directory: not a run, no config,
    already finished, or launched by an engine that cannot be resumed from here."""
