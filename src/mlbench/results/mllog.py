"""A finished run as an MLPerf Training log (``:::MLLOG {json}`` lines), from its result.json and
rank 0's events, written with MLCommons' own logger and key constants (``mlperf-logging``), and
checked with MLCommons' own compliance checker.

Why rebuild the log after the run instead of logging MLPerf keys while training: the event files
are already the durable record of every timed boundary (start, epoch ends, evaluations, goal),
so one exporter serves every run ever made, local or imported, without a second logging path in
the loop.

How mlbench's events map onto MLPerf's keys:

* ``init_start``: the launcher's creation of the run (run.json ``created``), else rank 0's first
  record; ``init_stop`` and ``run_start``: the loop's ``start`` event (data and model are built).
* ``epoch_start``/``epoch_stop``: the loop's ``epoch_end`` events (epochs numbered from 1);
  ``block_start``/``block_stop``: the training between two evaluations.
* ``eval_start``/``eval_stop``: the ``eval`` phase record (its end time minus its duration);
  ``eval_accuracy``: the task's target metric at that evaluation, as MLPerf writes it (a
  fraction for percentages: top-1, accuracy and BLEU ÷ 100), ``epoch_num`` the epochs done.
* ``run_stop``: the ``goal_reached`` event (status ``success``), else the ``end`` event
  (``aborted``). So run_start → run_stop is the wall clock to the target, evaluations
  included — MLPerf's score, and mlbench's ``wall_time_to_target``.

Benchmarks: only tasks MLPerf Training had get its benchmark name and ruleset (``BENCHMARKS``);
the others keep their mlbench name and are checked against a ruleset's common rules only
(:func:`check`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbench.errors import MlbenchError
from mlbench.results.summary import load_result
from mlbench.telemetry.events import events_path, read_events

#: the ruleset for tasks without an MLPerf counterpart: the last one that had 4a/4b's
#: benchmarks, so every export of this project is checked against the same common rules
GENERIC_RULESET = "0.7.0"


@dataclass(frozen=True)
class Benchmark:
    """An mlbench task's MLPerf Training counterpart."""

    name: str  # submission_benchmark
    ruleset: str  # the last MLPerf Training ruleset that had it


#: mlbench task → MLPerf Training benchmark. 4a/4b are the same models, data preparation and
#: quality targets (BLEU 24 / 25) as MLPerf Training v0.5–v0.7's GNMT and Transformer; both
#: were retired after v0.7. 1a (CIFAR-10 ResNet-20), 2a (logistic regression) and 3a
#: (WikiText-2 AWD-LSTM) have no MLPerf benchmark (MLPerf's ResNet is ResNet-50 on ImageNet).
BENCHMARKS: dict[str, Benchmark] = {
    "wmt16-gnmt": Benchmark("gnmt", "0.7.0"),
    "wmt17-transformer": Benchmark("transformer", "0.7.0"),
}

#: metrics mlbench reports in percent and MLPerf as a fraction
_PERCENT = {"top1", "top5", "accuracy", "bleu", "f1"}


def benchmark_for(task: str) -> Benchmark | None:
    return BENCHMARKS.get(task)


def _mllog() -> Any:
    try:
        from mlperf_logging import mllog
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        raise MlbenchError("mlperf-logging is not installed (pip install mlperf-logging)") from None
    return mllog


class _Lines(logging.Handler):
    """Collects the logger's ``:::MLLOG`` lines (its own warnings are not log lines)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.INFO:
            self.lines.append(record.getMessage().strip())


class _Messages(logging.Handler):
    """Collects the checker's findings (it reports them as warnings on the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _hyperparameters(
    task: str, cfg: dict[str, Any], planned_steps: int, world_size: int
) -> dict[str, Any]:
    """The optimizer hyperparameters MLPerf requires for this task's benchmark (the generic
    set for tasks without one), from the run's resolved config."""
    c = _mllog().constants
    data, optim = cfg.get("data", {}), cfg.get("optim", {})
    if task == "wmt16-gnmt":
        # mlbench expresses the decay schedule in fractions of the planned steps, MLPerf in steps
        return {
            c.GLOBAL_BATCH_SIZE: data["global_batch"],
            c.OPT_NAME: "adam",
            c.OPT_BASE_LR: optim["lr"],
            c.OPT_LR_ALT_DECAY_FUNC: False,
            c.OPT_LR_ALT_WARMUP_FUNC: False,
            c.OPT_LR_WARMUP_STEPS: optim["warmup_steps"],
            c.OPT_LR_REMAIN_STEPS: max(1, round(optim["decay_start"] * planned_steps)),
            c.OPT_LR_DECAY_INTERVAL: max(1, round(optim["decay_interval"] * planned_steps)),
            c.OPT_LR_DECAY_STEPS: optim["decay_steps"],
            c.OPT_LR_DECAY_FACTOR: optim["decay_factor"],
            c.MAX_SEQUENCE_LENGTH: (data["max_len"], {"method": "discard"}),
        }
    if task == "wmt17-transformer":
        out: dict[str, Any] = {
            c.GLOBAL_BATCH_SIZE: data["global_tokens"],  # MLPerf's Transformer counts tokens
            c.OPT_NAME: "adam",
            c.OPT_BASE_LR: optim["lr"],
            c.OPT_LR_WARMUP_STEPS: optim["warmup_steps"],
            c.OPT_ADAM_BETA_1: optim["beta1"],
            c.OPT_ADAM_BETA_2: optim["beta2"],
            c.OPT_ADAM_EPSILON: optim["eps"],
        }
        if data.get("max_len"):  # mlbench 4b keeps every training pair by default: no limit
            out[c.MAX_SEQUENCE_LENGTH] = (data["max_len"], {"method": "discard"})
        return out
    # data.batch_size is per rank and per micro-batch
    accumulate = cfg.get("train", {}).get("accumulate", 1) or 1
    batch = data.get("global_batch") or data.get("batch_size", 0) * world_size * accumulate
    out = {c.GLOBAL_BATCH_SIZE: batch, c.OPT_NAME: "sgd" if "momentum" in optim else "other"}
    if "lr" in optim:
        out[c.OPT_BASE_LR] = optim["lr"]
    for key, value in sorted(optim.items()):
        if key != "lr" and isinstance(value, int | float) and not isinstance(value, bool):
            out[f"opt_{key}"] = value
    return out


def _quality(metric: str, value: float) -> float:
    return value / 100.0 if metric in _PERCENT else value


def build_lines(
    run_dir: Path,
    *,
    benchmark: str | None = None,
    division: str | None = None,
    org: str = "mlbench",
    platform: str | None = None,
    status: str = "research",
) -> list[str]:
    """The run's MLPerf log lines, in time order."""
    run_dir = Path(run_dir)
    try:
        result = load_result(run_dir)
    except FileNotFoundError:
        raise MlbenchError(f"{run_dir} has no result.json (is the run finished?)") from None
    records = read_events(events_path(run_dir, 0))
    if not records:
        raise MlbenchError(f"{run_dir} has no events of rank 0 (rank-0.jsonl)")
    task = result["task"]
    if division is None:
        division = "closed" if result.get("official") else "open"
    if division == "closed" and not result.get("official"):
        raise MlbenchError(
            "a run with closed-division differences "
            f"({', '.join(result.get('official_differences') or [])}) is open division"
        )
    mapped = benchmark_for(task)
    bench_name = benchmark or (mapped.name if mapped else task)
    env = result.get("environment", {})
    platform = platform or _platform(result)
    events = {(r["kind"], r["name"]): r for r in records}  # the last of each
    mllog = _mllog()
    c = mllog.constants
    handler = _Lines()
    logger = logging.getLogger(f"mlbench.mllog.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    ml = mllog.mllog.MLLogger(logger=logger, default_stack_offset=1)
    source = events_path(run_dir, 0).name

    def ms(t: float) -> int:
        return round(t * 1000)

    def where(r: dict[str, Any] | None) -> dict[str, Any]:
        # provenance: the event-file line each MLPerf line came from (seq = line index)
        return {"file": source, "lineno": (r["seq"] + 1) if r else 0}

    def log(kind: str, key: str, value: Any, t: float, r: Any = None, **meta: Any) -> None:
        fn = {"start": ml.start, "end": ml.end, "point": ml.event}[kind]
        fn(key=key, value=value, time_ms=ms(t), metadata={**where(r), **meta})

    first = records[0]
    created = _created(run_dir)
    t0 = created if created is not None and created <= first["time"] else first["time"]
    start = events.get(("event", "start"), first)
    planned = int(events.get(("event", "planned_steps"), {"value": 0})["value"])

    log("point", c.CACHE_CLEAR, True, t0, first)
    log("start", c.INIT_START, None, t0, first)
    log("point", c.SUBMISSION_ORG, org, t0, first)
    log("point", c.SUBMISSION_PLATFORM, platform, t0, first)
    log("point", c.SUBMISSION_DIVISION, division, t0, first)
    log("point", c.SUBMISSION_STATUS, status, t0, first)
    log("point", c.SUBMISSION_BENCHMARK, bench_name, t0, first)
    log("point", c.SEED, result["config"].get("seed", env.get("seed")), t0, first)
    config = result["config"]
    if (batch := events.get(("event", "batch_size"))) is not None:
        # a batch size the task resolved on its device (1b: data.batch_size 0 = auto)
        config = {**config, "data": {**config.get("data", {}), "batch_size": int(batch["value"])}}
    for key, value in _hyperparameters(
        task, config, planned, int(result.get("world_size") or 1)
    ).items():
        value, meta = value if isinstance(value, tuple) else (value, {})
        log("point", key, value, start["time"], start, **meta)
    summary = result.get("summary", {})
    log("point", c.TRAIN_SAMPLES, _samples_per_epoch(result, records), start["time"], start)
    eval_samples = summary.get("final_metrics", {}).get("samples")
    log("point", c.EVAL_SAMPLES, int(eval_samples or 0), start["time"], start)
    log("end", c.INIT_STOP, None, start["time"], start)
    log("start", c.RUN_START, None, start["time"], start)
    _epochs_and_evals(log, c, records, start, result["goal"]["metric"])
    goal = events.get(("event", "goal_reached"))
    stop = goal or events.get(("event", "end")) or records[-1]
    succeeded = bool(goal) and bool(result.get("goal", {}).get("reached"))
    log("end", c.RUN_STOP, None, stop["time"], stop, status="success" if succeeded else "aborted")
    logger.removeHandler(handler)
    return handler.lines


def _epochs_and_evals(
    log: Any, c: Any, records: list[dict[str, Any]], start: dict[str, Any], metric: str
) -> None:
    """Epoch and evaluation intervals from the event stream, in time order. An epoch after the
    first starts when the work after the previous one does (after its evaluation, if any)."""
    epoch, in_epoch, last_t = 1, True, start["time"]
    log("start", c.EPOCH_START, None, last_t, start, epoch_num=epoch)
    eval_phase: dict[str, Any] | None = None
    for r in records:
        kind, name = r["kind"], r["name"]
        if kind == "event" and name in ("goal_reached", "end"):
            break
        if kind == "phase" and name == "eval":
            eval_phase = r
        elif kind == "val" and name == metric and eval_phase is not None:
            done = round(r["epoch"], 6)
            begin = max(last_t, eval_phase["time"] - eval_phase["value"])
            log("start", c.EVAL_START, None, begin, eval_phase, epoch_num=done)
            log(
                "point",
                c.EVAL_ACCURACY,
                _quality(metric, r["value"]),
                r["time"],
                r,
                epoch_num=done,
                metric=metric,
            )
            log("end", c.EVAL_STOP, None, r["time"], r, epoch_num=done)
            eval_phase, last_t = None, r["time"]
        elif kind == "event" and name == "epoch_end":
            log("end", c.EPOCH_STOP, None, r["time"], r, epoch_num=epoch)
            in_epoch, last_t = False, r["time"]
        elif kind in ("train", "phase", "comm") and not in_epoch:
            epoch += 1
            log("start", c.EPOCH_START, None, last_t, r, epoch_num=epoch)
            in_epoch = True
    if in_epoch:  # the run stopped inside an epoch (goal, step limit): it ends with the run
        stop = next(
            (r for r in records if r["kind"] == "event" and r["name"] in ("goal_reached", "end")),
            records[-1],
        )
        log("end", c.EPOCH_STOP, None, stop["time"], stop, epoch_num=epoch)


def _platform(result: dict[str, Any]) -> str:
    """``N x CPU|GPU model`` from the environment record (MLPerf's system name)."""
    env = result.get("environment", {})
    device = env.get("gpu_model") or env.get("cpu_model") or "unknown"
    return f"{result.get('world_size', 1)}x{device} ({result.get('backend') or 'local'})"


def _created(run_dir: Path) -> float | None:
    try:
        created = json.loads((run_dir / "run.json").read_text()).get("created")
    except (OSError, ValueError):
        return None
    return float(created) if isinstance(created, int | float) else None


def _samples_per_epoch(result: dict[str, Any], records: list[dict[str, Any]]) -> int:
    """Training samples in one epoch over all ranks: steps per epoch × samples per step."""
    s = result.get("summary", {})
    per_epoch = next(
        (r["value"] for r in records if r["kind"] == "event" and r["name"] == "steps_per_epoch"),
        None,
    )
    if per_epoch and s.get("steps") and s.get("samples"):
        return round(per_epoch * s["samples"] / s["steps"])
    return int(s.get("samples") or 0)


def export(run_dir: Path, out: Path | None = None, **kwargs: Any) -> Path:
    """Write the run's MLPerf log (default ``RUN_DIR/mlperf.log``); returns its path."""
    lines = build_lines(run_dir, **kwargs)
    path = Path(out) if out is not None else Path(run_dir) / "mlperf.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def ruleset_for(log: Path) -> tuple[str, str | None]:
    """(ruleset, benchmark) to check a log against: the benchmark's ruleset when MLPerf knows the
    benchmark named in the log, else the generic ruleset and None (common rules only)."""
    for line in Path(log).read_text().splitlines():
        if '"submission_benchmark"' in line:
            name = json.loads(line.split(" ", 1)[1])["value"]
            for b in BENCHMARKS.values():
                if b.name == name:
                    return b.ruleset, name
            if _known(name, GENERIC_RULESET):  # another MLPerf name (--benchmark resnet)
                return GENERIC_RULESET, name
            return GENERIC_RULESET, None
    raise MlbenchError(f"{log} has no submission_benchmark line")


def _known(name: str, ruleset: str) -> bool:
    """Whether MLCommons' checker has rules for benchmark ``name`` in ``ruleset``."""
    from mlperf_logging.compliance_checker import mlp_compliance

    root = Path(mlp_compliance.__file__).parent / f"training_{ruleset}"
    return (root / f"closed_{name}.yaml").is_file()


#: the one rule relaxed for tasks MLPerf never had: their benchmark name. Loaded after the
#: ruleset's common.yaml, it replaces that file's ``submission_benchmark`` rule (the checker
#: drops an earlier rule's messages for a key a later config defines).
_ANY_BENCHMARK = """
- KEY:
    NAME:  submission_benchmark
    REQ:   EXACTLY_ONE
    CHECK: " v['value'] != '' "
"""


def check(log: Path, ruleset: str | None = None) -> tuple[bool, str]:
    """Run MLCommons' compliance checker on ``log``: (passed, its messages).

    A benchmark MLPerf knows is checked exactly as ``python -m
    mlperf_logging.compliance_checker --usage training --ruleset R LOG`` does (common rules,
    the division's, the benchmark's). Any other log is checked against the ruleset's
    ``common.yaml`` alone — every structural rule (init/run/epoch/eval intervals, required keys,
    run_stop status) — with the benchmark-name rule relaxed; the division's and benchmark's
    files (hyperparameter values, quality target) cannot apply to a benchmark MLPerf never had.
    """
    from mlperf_logging.compliance_checker import mlp_compliance, mlp_parser

    detected, benchmark = ruleset_for(log)
    ruleset = ruleset or detected
    checker = mlp_compliance.make_checker("training", ruleset, False, False)
    root = logging.getLogger()
    capture = _Messages()
    root.addHandler(capture)
    try:
        if benchmark is not None:
            ok = bool(checker.check_file(str(log), f"training_{ruleset}/common.yaml"))
        else:
            lines, errors = mlp_parser.parse_file(str(log), ruleset=ruleset)
            if errors:
                checker.put_message("Log lines had parsing errors.")
            with tempfile.TemporaryDirectory() as tmp:
                relaxed = Path(tmp) / "any_benchmark.yaml"
                relaxed.write_text(_ANY_BENCHMARK)
                common = Path(mlp_compliance.__file__).parent / f"training_{ruleset}/common.yaml"
                checker.configured_checks(lines, str(common))
                checker.configured_checks(lines, str(relaxed))
            # common.yaml queued its division's file, which queues the benchmark's: not run here
            mlp_compliance.enqueued_configs.clear()
            checker.log_messages()
            ok = not checker.has_messages()
    finally:
        root.removeHandler(capture)
    return ok, "\n".join(capture.lines)
