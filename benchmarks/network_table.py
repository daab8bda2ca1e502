"""The ``--network`` scaling study's table: one row per scheme, one column per bandwidth.

Reads a sweep (or run directories) made with ``mlbench sweep ... --network SPEC...`` and prints,
as Markdown, the median seconds per step of each scheme at each requested bandwidth (``*``: the
measured bandwidth missed the request by more than the tolerance), the measured bandwidth of each
column, and each scheme's bytes sent per step; the figure comes from ``mlbench report``
(``time_vs_bandwidth.png``)::

    python benchmarks/network_table.py ~/.mlbench/sweeps/<sweep_id>
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from mlbench.launch.network import format_rate
from mlbench.report.build import network_series
from mlbench.report.load import load_inputs


def main(paths: list[str]) -> int:
    inputs = load_inputs([Path(p) for p in paths])
    series = network_series(inputs.configurations)
    rates = sorted({p["requested_bps"] for s in series for p in s["points"]}, reverse=True)
    measured: dict[float, list[float]] = {r: [] for r in rates}
    bytes_per_step: dict[str, list[float]] = {}
    for c in inputs.configurations:
        for run in c.runs:
            if run.result and run.result.get("summary", {}).get("bytes_per_step"):
                label = f"{c.algorithm} · {c.workers} workers"
                bytes_per_step.setdefault(label, []).append(run.result["summary"]["bytes_per_step"])
    head = ["scheme", *(format_rate(r) for r in rates), "MB sent / step"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for s in series:
        by_rate = {p["requested_bps"]: p for p in s["points"]}
        cells = [s["label"]]
        for r in rates:
            p = by_rate.get(r)
            if p is None:
                cells.append("—")
                continue
            if p["measured_bps"]:
                measured[r].append(p["measured_bps"])
            cells.append(f"{p['step_time']:.3f}" + (" *" if p["flagged"] else ""))
        sent = bytes_per_step.get(s["label"])
        cells.append(f"{statistics.median(sent) / 1e6:.3f}" if sent else "—")
        print("| " + " | ".join(cells) + " |")
    row = ["measured (median)"]
    row += [format_rate(statistics.median(measured[r])) if measured[r] else "—" for r in rates]
    print("| " + " | ".join([*row, ""]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
