"""What ``mlbench sweep`` shows: one row per planned run (point, repeat, seed, state,
time-to-target, throughput, run id) and how much is left, with an ETA.

The numbers come from each run's result.json (the record), read once a run has ended. On a
terminal the table is redrawn in place; in a pipe or a log file one line is printed per run that
starts or ends, so a long sweep's log stays readable.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mlbench.cli.output import id_column


def load_result(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The run's result.json, or None while it has none (not run, running, killed hard)."""
    if not entry.get("run_dir"):
        return None
    try:
        data = json.loads((Path(entry["run_dir"]) / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ttt_text(result: dict[str, Any] | None) -> str:
    """Time-to-target, or ``missed`` when the run ended without reaching the target."""
    if result is None:
        return "—"
    summary = result.get("summary") or {}
    reached = (result.get("goal") or {}).get("reached")
    ttt = summary.get("time_to_target")
    if reached and isinstance(ttt, int | float):
        return f"{ttt:.2f} s"
    return "missed"


def throughput_text(result: dict[str, Any] | None) -> str:
    summary = (result or {}).get("summary") or {}
    value = summary.get("throughput")
    if not isinstance(value, int | float) or not value:
        return "—"
    return f"{value:,.0f} {summary.get('throughput_unit', 'samples/s')}"


def _duration(result: dict[str, Any] | None) -> float | None:
    wall = ((result or {}).get("launcher") or {}).get("wall_time_total")
    return float(wall) if isinstance(wall, int | float) else None


class SweepView:
    """The sweep's table and ETA, kept current while runs go on.

    ``states`` overrides an entry's shown state (``running``, or a master's ``queued``), keyed by
    (point, repeat); ``durations`` are the seconds each run took end to end, for the ETA."""

    def __init__(self, data: dict[str, Any], console: Console) -> None:
        self.data = data
        self.console = console
        self.shown: dict[tuple[str, int], str] = {}
        self.started: dict[tuple[str, int], float] = {}
        self.durations: list[float] = []
        self._results: dict[str, dict[str, Any] | None] = {}
        self._live: Live | None = None
        self._last = 0.0
        for e in data["points"]:  # runs that ended in an earlier invocation count for the ETA
            if e["state"] in ("finished", "failed") and (d := _duration(self.result(e))):
                self.durations.append(d)

    # ------------------------------------------------------------------ state changes
    def result(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        run_id = entry.get("run_id")
        if run_id is None or entry["state"] == "pending":
            return None
        if run_id not in self._results:
            self._results[run_id] = load_result(entry)
        return self._results[run_id]

    def set_state(self, entry: dict[str, Any], state: str) -> None:
        """Show ``entry`` as ``state`` (running, queued...) until it ends."""
        key = (entry["point"], entry["repeat"])
        if self.shown.get(key) == state:
            return
        self.shown[key] = state
        if state == "running":
            self.started.setdefault(key, time.monotonic())
        self._line(entry, state)
        self.refresh(force=True)

    def ended(self, entry: dict[str, Any], duration: float | None = None) -> None:
        """``entry`` has its final state in sweep.json (and its result.json)."""
        key = (entry["point"], entry["repeat"])
        self.shown.pop(key, None)
        start = self.started.pop(key, None)
        if duration is None and start is not None:
            duration = time.monotonic() - start
        if duration is not None and entry["state"] in ("finished", "failed"):
            self.durations.append(duration)
        self._results.pop(entry.get("run_id") or "", None)
        self._line(entry, entry["state"])
        self.refresh(force=True)

    # ------------------------------------------------------------------ rendering
    def eta(self) -> float | None:
        """Seconds left: the mean run so far × the runs not ended, less what the running ones
        have done already; None before any run has ended."""
        if not self.durations:
            return None
        mean = statistics.fmean(self.durations)
        now = time.monotonic()
        left = 0.0
        for e in self.data["points"]:
            if e["state"] == "finished":
                continue
            key = (e["point"], e["repeat"])
            if e["state"] in ("failed", "cancelled") and key not in self.shown:
                continue  # ended in this invocation: not run again now
            left += max(0.0, mean - (now - self.started[key])) if key in self.started else mean
        return left

    def footer(self, named: bool = True) -> str:
        points = self.data["points"]
        done = sum(e["state"] == "finished" for e in points)
        failed = sum(e["state"] == "failed" for e in points)
        parts = [f"{done}/{len(points)} runs finished"]
        if failed:
            parts.append(f"{failed} failed")
        eta = self.eta()
        if eta is not None and done + failed < len(points):
            parts.append(f"ETA {_clock(eta)}")
        text = ", ".join(parts)
        return f"sweep {self.data['sweep_id']}: {text}" if named else text

    def _window(self, limit: int | None) -> tuple[int, int]:
        """The rows to draw: all, or ``limit`` of them around the first run not yet ended (a
        sweep of hundreds of runs does not fit a terminal, and the live view must)."""
        n = len(self.data["points"])
        if limit is None or n <= limit:
            return 0, n
        active = [
            i
            for i, e in enumerate(self.data["points"])
            if (e["point"], e["repeat"]) in self.shown or e["state"] == "pending"
        ]
        first = active[0] if active else n
        start = max(0, min(first - limit // 3, n - limit))
        return start, start + limit

    def table(self, limit: int | None = None) -> Table:
        start, end = self._window(limit)
        table = Table(
            id_column("point"),
            "repeat",
            "seed",
            "state",
            "time to target",
            "throughput",
            id_column("run"),
            title=f"{self.data['task']} sweep",
            caption=f"rows {start + 1}–{end} of {len(self.data['points'])}"
            if end - start < len(self.data["points"])
            else None,
        )
        for e in self.data["points"][start:end]:
            key = (e["point"], e["repeat"])
            state = self.shown.get(key, e["state"])
            if state == "running" and key in self.started:
                state = f"running {time.monotonic() - self.started[key]:.0f} s"
            result = self.result(e)
            table.add_row(
                e["point"],
                str(e["repeat"]),
                str(e["seed"]),
                state,
                ttt_text(result),
                throughput_text(result),
                e.get("run_id") or "—",
            )
        return table

    def renderable(self) -> Group:
        limit = max(3, self.console.size.height - 9)  # title, header, rules, caption, footer
        return Group(self.table(limit), Text(self.footer()))

    def __enter__(self) -> SweepView:
        if self.console.is_terminal:
            self._live = Live(self.renderable(), console=self.console, auto_refresh=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.renderable(), refresh=True)
            self._live.__exit__(None, None, None)
            self._live = None

    def refresh(self, force: bool = False) -> None:
        """Redraw (at most twice a second unless ``force``): called from the run's poll loop."""
        now = time.monotonic()
        if self._live is None or (not force and now - self._last < 0.5):
            return
        self._last = now
        self._live.update(self.renderable(), refresh=True)

    def _line(self, entry: dict[str, Any], state: str) -> None:
        if self._live is not None:
            return
        text = f"{entry['point']} repeat {entry['repeat']} (seed {entry['seed']}): {state}"
        if entry.get("run_id"):
            text += f" [{entry['run_id']}]"
        if state in ("finished", "failed"):
            result = self.result(entry)
            text += f"  time to target {ttt_text(result)}, {throughput_text(result)}"
            if entry.get("reason"):
                text += f" ({entry['reason']})"
        print(f"{text}  ({self.footer(named=False)})", file=self.console.file, flush=True)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
