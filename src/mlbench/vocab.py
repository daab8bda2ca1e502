"""The project's shared words: phase names, event kinds, stop reasons, goals and backends.

Why one module: these strings cross every boundary — the loop writes them into event files, the
master stores and filters on them, the dashboard draws them, the CLI offers them as choices. When
each layer spelled its own list, a renamed phase silently became a chart with a hole in it. Here
each vocabulary is a ``StrEnum``, so a member *is* the string that goes on the wire (``Phase.DATA
== "data"``, JSON needs no conversion) while code gets a closed, typed set to check against.

It sits in the bottom layer (DESIGN §3, beside ``config.py`` and ``errors.py``): plain Python, no
torch and no other mlbench import, so anything — the loop's timer, telemetry, the master — can
import it without pulling in anything else. Words only one face uses (a run's state in the
master's database) live with that face (``mlbench.server.states``).
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """What the loop's timer attributes time to (docs/timing.md). Declaration order is the order
    of a step, then the out-of-step phases; ``phase`` events carry one of these as their name."""

    DATA = "data"
    FORWARD = "forward"
    BACKWARD = "backward"
    COMMUNICATION = "communication"
    OPTIMIZER = "optimizer"
    EVAL = "eval"
    CHECKPOINT = "checkpoint"


PHASES: tuple[Phase, ...] = tuple(Phase)
# the phases inside a training step: their sum is ``train_time`` (eval and checkpoint are not)
STEP_PHASES: tuple[Phase, ...] = (
    Phase.DATA,
    Phase.FORWARD,
    Phase.BACKWARD,
    Phase.COMMUNICATION,
    Phase.OPTIMIZER,
)


class EventKind(StrEnum):
    """The ``kind`` field of an event record (DESIGN §4): what sort of number ``value`` is."""

    TRAIN = "train"  # training metrics (loss, lr, throughput)
    VAL = "val"  # evaluation metrics
    PHASE = "phase"  # seconds spent in a Phase over the last window
    RESOURCE = "resource"  # CPU/GPU/memory samples
    COMM = "comm"  # bytes communicated
    EVENT = "event"  # lifecycle marks (start, epoch_end, end)


EVENT_KINDS: frozenset[EventKind] = frozenset(EventKind)


class StopReason(StrEnum):
    """Why a run's loop stopped (``stop_reason`` in result.json)."""

    GOAL_REACHED = "goal_reached"
    MAX_STEPS = "max_steps"
    MAX_EPOCHS = "max_epochs"
    TIME_LIMIT = "time_limit"
    DONE = "done"  # a measurement task (0a) that has no quality goal finished its plan


class Goal(StrEnum):
    """Which of a task's two quality targets a run trains to (DESIGN §1)."""

    FULL = "full"
    LIGHT = "light"


class Backend(StrEnum):
    """The ``torch.distributed`` backend a run asks for; ``auto`` is nccl with CUDA, else gloo."""

    AUTO = "auto"
    GLOO = "gloo"
    NCCL = "nccl"
    MPI = "mpi"


def vocabularies() -> dict[str, list[str]]:
    """Every vocabulary as plain lists, in declaration order (what a client that cannot import
    Python — the dashboard — is served)."""
    return {
        "phases": [p.value for p in PHASES],
        "step_phases": [p.value for p in STEP_PHASES],
        "event_kinds": [k.value for k in EventKind],
        "stop_reasons": [r.value for r in StopReason],
        "goals": [g.value for g in Goal],
        "backends": [b.value for b in Backend],
    }
