"""The price table behind cost-to-accuracy: $/hour per node type, from a TOML file.

The packaged ``prices.toml`` holds the original MLBench's prices with their source and date;
a user's table (``--prices FILE``) has the same layout. Cost of a run = time to target (hours) ×
nodes × $/hour, nodes = ceil(workers / workers per node) — the original ran one worker per node.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mlbench.errors import ConfigError

DEFAULT_NODE = "n1-standard-4-preemptible"


@dataclass(frozen=True)
class Price:
    node: str
    per_hour: float
    description: str
    currency: str
    source: str
    date: str

    def cost(self, seconds: float, workers: int, workers_per_node: int = 1) -> float:
        return seconds / 3600.0 * nodes(workers, workers_per_node) * self.per_hour

    def caption(self) -> str:
        return (
            f"{self.node}: {self.per_hour:g} {self.currency}/h per node ({self.description}); "
            f"source: {self.source}, {self.date}"
        )


def nodes(workers: int, workers_per_node: int) -> int:
    if workers_per_node < 1:
        raise ConfigError("--workers-per-node must be at least 1")
    return math.ceil(workers / workers_per_node)


def load_price(node: str = DEFAULT_NODE, path: Path | None = None) -> Price:
    """The price of ``node`` from ``path`` (default: the packaged table)."""
    try:
        text = (
            Path(path).read_text()
            if path
            else resources.files("mlbench.report").joinpath("prices.toml").read_text()
        )
        table = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the price table {path}: {exc}") from None
    known = table.get("nodes", {})
    if node not in known:
        raise ConfigError(
            f"node type {node!r} is not in the price table {path or 'prices.toml'} "
            f"(it has: {', '.join(sorted(known)) or 'none'})"
        )
    entry = known[node]
    per_hour = entry.get("per_hour")
    if isinstance(per_hour, bool) or not isinstance(per_hour, int | float) or per_hour < 0:
        raise ConfigError(f"node type {node!r}: per_hour must be a number >= 0, got {per_hour!r}")
    return Price(
        node=node,
        per_hour=float(per_hour),
        description=str(entry.get("description", "")),
        currency=str(table.get("currency", "USD")),
        source=str(table.get("source", str(path) if path else "")),
        date=str(table.get("date", "undated")),
    )
