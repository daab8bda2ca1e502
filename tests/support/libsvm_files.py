"""Small LIBSVM files in a9a's real format (±1 labels, 14 sorted binary features of 123), with
one line replaced, for the tests of bad input."""

from __future__ import annotations

import random
from pathlib import Path


def a9a_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.choice(("+1", "-1"))
        features = " ".join(f"{i}:1" for i in sorted(rng.sample(range(1, 124), 14)))
        lines.append(f"{label} {features} \n")  # a9a's lines end in a space, as here
    return lines


def write_a9a(
    root: Path, *, rows: int = 400, replace: dict[int, str] | None = None, name: str = "a9a"
) -> tuple[Path, Path]:
    """``root/libsvm/NAME`` and ``NAME.t``; ``replace`` maps a 1-based train line to its text
    (written as given: a truncated last line has no newline)."""
    lines = a9a_lines(rows)
    for lineno, text in (replace or {}).items():
        lines[lineno - 1] = text
    folder = root / "libsvm"
    folder.mkdir(parents=True, exist_ok=True)
    train, test = folder / name, folder / f"{name}.t"
    train.write_text("".join(lines))
    test.write_text("".join(a9a_lines(100, seed=1)))
    return train, test
