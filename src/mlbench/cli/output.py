"""Terminal output: listings that survive a pipe, a live progress line while training, a summary
table at the end.

Progress is read from rank 0's event file (the durable record), never from the workers directly,
so what the user sees is exactly what was recorded.

Tables go through :func:`console_for`. rich sizes a table to the terminal, and when stdout is not
a terminal it assumes 80 columns and wraps or cuts cells with "…" — so ``mlbench tasks | grep
cifar10-resnet20`` found nothing. Piped output is therefore never narrowed, and identifier columns
(:func:`id_column`) never wrap: a name is either printed whole or, on a very narrow terminal only,
shortened visibly. Scripts should still prefer ``--json``, which every listing command has.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from mlbench.telemetry.events import events_path, read_new_events
from mlbench.train.timer import PHASES

#: Line width for tables when stdout is a pipe or a file: wider than any row we print, so rich
#: sizes each column to its content and never wraps or truncates a cell.
PIPED_WIDTH = 100_000


def console_for(file: IO[str] | None = None) -> Console:
    """A rich console for tables on ``file`` (default: the current ``sys.stdout``).

    On a terminal: the terminal's width (rich wraps long free-text cells to fit). Otherwise:
    :data:`PIPED_WIDTH`, so every cell is printed whole on one line, for ``grep``/``cut``/``less``.
    """
    file = file if file is not None else sys.stdout
    if file.isatty():
        return Console(file=file)
    return Console(file=file, width=PIPED_WIDTH, soft_wrap=False)


def id_column(header: str) -> Column:
    """A table column for names users copy or grep (task, run id, key): never wrapped."""
    return Column(header, no_wrap=True)


class RunProgress:
    """Tails ``rank-0.jsonl`` and renders epoch, step, loss, last val metric, elapsed."""

    def __init__(self, run_dir: Path, metric: str, console: Console) -> None:
        self.path = events_path(run_dir, 0)
        self.metric = metric
        self.console = console
        self.offset = 0
        self.steps_total: float | None = None
        self.step = 0
        self.epoch = 0.0
        self.loss: float | None = None
        self.val: float | None = None
        self.interactive = console.is_terminal
        self._last_print = 0.0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} steps"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not self.interactive,
        )
        self._task = self._progress.add_task("training", total=None, info="starting workers…")

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.tick()
        self._progress.__exit__(None, None, None)

    def _info(self) -> str:
        parts = [f"epoch {self.epoch:.2f}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.val is not None:
            parts.append(f"{self.metric} {self.val:.2f}")
        return "  ".join(parts)

    def tick(self) -> None:
        records, self.offset = read_new_events(self.path, self.offset)
        new_val = False
        for r in records:
            self.step = max(self.step, r["step"])
            self.epoch = max(self.epoch, r["epoch"])
            if r["kind"] == "event" and r["name"] == "planned_steps":
                self.steps_total = r["value"]
            elif r["kind"] == "train" and r["name"] == "loss":
                self.loss = r["value"]
            elif r["kind"] == "val" and r["name"] == self.metric:
                self.val, new_val = r["value"], True
        self._progress.update(
            self._task, completed=self.step, total=self.steps_total, info=self._info()
        )
        if not self.interactive and records:
            now = time.monotonic()
            if new_val or now - self._last_print > 30:
                self._last_print = now
                elapsed = now - self.started
                line = f"[{elapsed:7.1f}s] step {self.step}  {self._info()}"
                print(line, file=self.console.file, flush=True)


def _fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _upload_text(upload: dict[str, Any]) -> str:
    """result.json's ``upload``: complete, or what is missing on the master and why."""
    if upload.get("complete"):
        return f"complete ({upload.get('uploaded')} events)"
    return (
        f"[yellow]INCOMPLETE[/yellow]: {upload.get('quarantined')} refused (quarantined), "
        f"{upload.get('pending')} not sent — {escape(str(upload.get('reason')))}"
    )


def print_summary(result: dict[str, Any], run_dir: Path, console: Console | None = None) -> None:
    console = console or console_for()
    s = result.get("summary", {})
    goal = result.get("goal", {})
    state = result.get("state")
    table = Table(title=f"{result.get('task')} — {state}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    if result.get("reason"):
        table.add_row("reason", str(result["reason"]))
    table.add_row(
        "goal",
        f"{goal.get('metric')} {'≥' if goal.get('mode') == 'max' else '≤'} "
        f"{goal.get('threshold')} ({goal.get('goal')})",
    )
    table.add_row("goal reached", "yes" if goal.get("reached") else "no")
    table.add_row("time to target", _fmt_s(s.get("time_to_target")))
    table.add_row("train time", _fmt_s(s.get("train_time")))
    table.add_row("wall time", _fmt_s(s.get("wall_time")))
    table.add_row("stop reason", str(s.get("stop_reason") or "—"))
    if s.get("restarts"):  # the clock ran on through them: their cost is in the times above
        table.add_row(
            "restarts",
            f"{len(s['restarts'])}, costing {_fmt_s(s.get('restart_cost_s'))} "
            "(lost work + downtime)",
        )
    table.add_row("steps / epochs", f"{s.get('steps')} / {(s.get('epochs') or 0):.2f}")
    if s.get("throughput"):
        unit = s.get("throughput_unit", "samples/s")
        table.add_row("throughput", f"{s['throughput']:.1f} {unit} (all ranks)")
    metrics = s.get("final_metrics") or {}
    if metrics:
        table.add_row(
            "final metrics",
            ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, int | float)),
        )
    table.add_row("workers / backend", f"{result.get('world_size')} / {result.get('backend')}")
    if result.get("faults"):
        table.add_row("faults", ", ".join(str(f.get("spec")) for f in result["faults"]))
    restarts = (result.get("launcher") or {}).get("engine_restarts")
    if restarts:
        table.add_row("restarts", f"{restarts} (attempts.jsonl)")
    st = s.get("stragglers")
    if isinstance(st, dict) and st.get("flagged"):
        table.add_row(
            "straggler",
            f"[yellow]rank {st.get('slowest_rank')}[/yellow]: {st.get('ratio', 0):.2f}× the "
            "median rank's compute per step",
        )
    upload = result.get("upload")
    if isinstance(upload, dict):
        table.add_row("upload", _upload_text(upload))
    table.add_row("algorithm", str(result.get("algorithm")))
    table.add_row(
        "official",
        "yes"
        if result.get("official")
        else "no (" + ", ".join(result.get("official_differences", [])[:4]) + ")",
    )
    phases = s.get("phases_slowest") or {}
    if phases:
        slowest = s.get("slowest_rank")
        total = sum(phases.get(p, 0.0) for p in PHASES) or 1.0
        for p in PHASES:
            v = phases.get(p, 0.0)
            table.add_row(f"  {p} (rank {slowest})", f"{v:.2f} s  ({100 * v / total:.1f} %)")
    table.add_row("run directory", str(run_dir))
    console.print(table)
