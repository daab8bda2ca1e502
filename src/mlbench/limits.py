"""The bounds of an event record's fields: the one place both the writer and the master read.

Why one module: the master's ingest schema (``server/schemas.py`` ``EventIn``) refuses a batch
holding any record past these bounds, and it has to — PostgreSQL refuses over-long ``varchar``
values, NUL in text and integers past 64 bits. When only the master knew them, a plug-in could
write a 65-character metric name into its rank file, and the record was found out only at
upload, long after the emitting call could have said so. The writer
(``telemetry/events.py`` ``make_record``) now checks the same numbers when the record is made.

It sits in the bottom layer (DESIGN §3) beside ``vocab.py``: plain constants, no imports, so
telemetry and the master both import it without importing each other. The event kinds are
``mlbench.vocab.EventKind``; what is here is every other rule of ``EventIn``.
"""

from __future__ import annotations

#: ``run_id``: a run directory's name, which is also a URL path segment on the master
RUN_ID_MAX = 64
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
#: ``rank``: 0 … RANK_MAX
RANK_MAX = 1_000_000
#: ``seq`` and ``step``: 0 … 2**62 (a bigint column, with room to spare)
SEQ_MAX = 2**62
STEP_MAX = 2**62
#: ``name`` (1 … NAME_MAX characters) and ``unit`` (0 … UNIT_MAX): printable text
NAME_MAX = 64
UNIT_MAX = 16
#: no control characters (C0 and DEL; NUL among them): PostgreSQL refuses NUL in text
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
