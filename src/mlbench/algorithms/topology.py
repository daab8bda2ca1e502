"""Communication graphs and mixing matrices for decentralised (gossip) schemes.

A *mixing matrix* ``W`` (``world x world``, float64) says how rank ``i`` combines its neighbours'
models: ``x_i ← Σ_j W_ij x_j``. Every matrix built or accepted here is

* **symmetric** (``W_ij = W_ji``): ``i`` talks to ``j`` exactly when ``j`` talks to ``i``, so one
  message goes each way over every edge;
* **doubly stochastic** (non-negative, rows *and* columns sum to 1): the average of the ranks'
  models is preserved by a gossip step, so repeated mixing converges to the mean (consensus) when
  the graph is connected and aperiodic — i.e. when :func:`spectral_gap` is positive.

Topologies (``k`` = world size; "neighbours" are the *distinct* peers, never the rank itself):

* ``ring``: ``i ± 1 (mod k)``. ``k = 1``: no neighbour, ``W = [[1]]``; ``k = 2``: the two
  neighbours coincide, so each rank has one (``W`` = all 1/2, the same as ``complete``).
* ``torus``: ranks laid out row-major on a ``rows x cols`` grid, as square as possible
  (``rows`` = the largest divisor of ``k`` not above ``√k``), wrapped in both directions:
  neighbours ``(r ± 1, c)`` and ``(r, c ± 1)``. Both sides must be ≥ 2 — sizes that cannot be so
  factored (``k < 4`` and primes) are a :class:`~mlbench.errors.ConfigError`. A side of length 2
  contributes one neighbour, not two (``2 x 2`` is the ring of 4; ``2 x c`` has degree 3).
* ``exponential``: peers at distances ``2^0, 2^1, ...`` (``< k``) in *both* directions,
  ``i ± 2^m (mod k)`` — the one-sided exponential graph is directed; adding the mirror edges makes
  ``W`` symmetric. For ``k ≤ 5`` this is the complete graph.
* ``complete``: everyone, ``W_ij = 1/k``.
* ``custom``: a user matrix (see :func:`parse_custom`), validated as described there.

Weights of the built-in graphs are **Metropolis–Hastings**: ``W_ij = 1 / (1 + max(d_i, d_j))``
for each edge, ``W_ii = 1 - Σ_{j≠i} W_ij``. This is symmetric and doubly stochastic for any graph,
and on a *regular* graph (all degrees ``d``) it is exactly the uniform ``1 / (d + 1)`` on the rank
itself and on each neighbour. All built-in graphs are circulant or tori, hence regular, so they get
uniform weights; the Metropolis rule only matters for irregular graphs built with
:func:`metropolis_hastings` (e.g. to write a custom matrix).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mlbench.errors import ConfigError

Matrix = npt.NDArray[np.float64]

TOPOLOGIES = ("ring", "torus", "exponential", "complete", "custom")

#: Tolerance for row/column sums and symmetry of custom matrices.
TOL = 1e-9
#: A mixing matrix whose spectral gap is below this never reaches consensus.
MIN_GAP = 1e-9


# ---------------------------------------------------------------------------------- graphs
def _check_world(world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world size must be a positive integer, got {world_size!r}")


def torus_shape(world_size: int) -> tuple[int, int]:
    """``(rows, cols)`` with ``rows * cols = world_size``, ``2 ≤ rows ≤ cols``, as square as
    possible; ConfigError when no such factorisation exists (``world_size < 4`` or prime)."""
    _check_world(world_size)
    for rows in range(math.isqrt(world_size), 1, -1):
        if world_size % rows == 0:
            return rows, world_size // rows
    raise ConfigError(
        f"topology torus needs a world size that factors as rows x cols with both ≥ 2 "
        f"(e.g. 4, 6, 8, 9, 12); {world_size} does not — use ring, exponential or complete"
    )


def adjacency(topology: str, world_size: int) -> list[set[int]]:
    """Distinct neighbours of each rank (self excluded) for a built-in topology."""
    _check_world(world_size)
    k = world_size
    if topology == "ring":
        return [{(i - 1) % k, (i + 1) % k} - {i} for i in range(k)]
    if topology == "torus":
        rows, cols = torus_shape(k)
        out = []
        for i in range(k):
            r, c = divmod(i, cols)
            peers = {
                ((r - 1) % rows) * cols + c,
                ((r + 1) % rows) * cols + c,
                r * cols + (c - 1) % cols,
                r * cols + (c + 1) % cols,
            }
            out.append(peers - {i})
        return out
    if topology == "exponential":
        dists = [1 << m for m in range(k.bit_length()) if (1 << m) < k]
        return [{(i + s * d) % k for d in dists for s in (1, -1)} - {i} for i in range(k)]
    if topology == "complete":
        return [set(range(k)) - {i} for i in range(k)]
    raise ConfigError(f"unknown topology {topology!r}; known: {', '.join(TOPOLOGIES)}")


def metropolis_hastings(neighbour_sets: Sequence[set[int]]) -> Matrix:
    """Metropolis–Hastings weights of an undirected graph (given as symmetric neighbour sets).

    ``W_ij = 1 / (1 + max(d_i, d_j))`` on edges, the rest of each row on the diagonal. Uniform
    ``1 / (d + 1)`` on a ``d``-regular graph.
    """
    k = len(neighbour_sets)
    degree = [len(s) for s in neighbour_sets]
    w = np.zeros((k, k), dtype=np.float64)
    for i, peers in enumerate(neighbour_sets):
        for j in peers:
            if i not in neighbour_sets[j]:
                raise ValueError(f"graph is not undirected: {i}→{j} but not {j}→{i}")
            w[i, j] = 1.0 / (1 + max(degree[i], degree[j]))
    for i in range(k):
        w[i, i] = 1.0 - (w[i].sum() - w[i, i])
    return w


# ---------------------------------------------------------------------------------- custom
def parse_custom(custom: str | Sequence[Sequence[float]] | Matrix | None) -> Matrix:
    """A user mixing matrix: JSON text (a list of rows), a path to a JSON file, or rows.

    Requirements (each violation is a ConfigError naming it): a non-empty square list of lists of
    finite numbers; every entry ≥ 0; every row and every column sums to 1 within ``1e-9``;
    symmetric within ``1e-9``. (Symmetry is required, not just double stochasticity: the gossip
    step sends to exactly the ranks it receives from, and the spectral gap is defined on real
    eigenvalues.) The size is checked against the world size by :func:`mixing_matrix`.
    """
    if custom is None:
        raise ConfigError("topology custom needs mixing_matrix (JSON rows or a .json file)")
    rows: Any = custom
    if isinstance(custom, str):
        text = custom.strip()
        if not text:
            raise ConfigError("mixing_matrix is empty")
        if not text.startswith(("[", "{")):
            path = Path(text).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"mixing_matrix: {text!r} is neither a JSON list of rows nor an existing file"
                )
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"mixing_matrix: cannot read {path}: {exc}") from None
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"mixing_matrix: invalid JSON: {exc}") from None
    return validate_matrix(rows)


def validate_matrix(rows: Any) -> Matrix:
    """Check ``rows`` is a symmetric doubly stochastic matrix; return it as float64."""
    if isinstance(rows, np.ndarray):
        rows = rows.tolist()
    if not isinstance(rows, list) or not rows:
        raise ConfigError("mixing_matrix must be a non-empty list of rows")
    k = len(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise ConfigError(f"mixing_matrix: row {i} is not a list")
        if len(row) != k:
            raise ConfigError(
                f"mixing_matrix is not square: row {i} has {len(row)} entries, expected {k}"
            )
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"mixing_matrix[{i}][{j}] = {v!r} is not a finite number")
            if v < 0:
                raise ConfigError(f"mixing_matrix[{i}][{j}] = {v} is negative")
    w = np.array(rows, dtype=np.float64)
    for i, s in enumerate(w.sum(axis=1)):
        if abs(s - 1.0) > TOL:
            raise ConfigError(f"mixing_matrix: row {i} sums to {float(s):.12g}, not 1")
    for j, s in enumerate(w.sum(axis=0)):
        if abs(s - 1.0) > TOL:
            raise ConfigError(f"mixing_matrix: column {j} sums to {float(s):.12g}, not 1")
    diff = np.abs(w - w.T)
    if diff.max() > TOL:
        a, b = (int(x) for x in np.unravel_index(int(diff.argmax()), diff.shape))
        raise ConfigError(
            f"mixing_matrix is not symmetric: [{a}][{b}] = {float(w[a, b]):.12g} "
            f"but [{b}][{a}] = {float(w[b, a]):.12g}"
        )
    return w


# ---------------------------------------------------------------------------------- API
def mixing_matrix(
    topology: str,
    world_size: int,
    custom: str | Sequence[Sequence[float]] | Matrix | None = None,
) -> Matrix:
    """The ``world_size x world_size`` mixing matrix of ``topology`` (see the module docstring).

    ``custom`` is read only for ``topology = "custom"``. Raises ConfigError for an unknown
    topology, a world size the topology cannot be built on, an invalid custom matrix or one of
    the wrong size, and any matrix that cannot reach consensus (spectral gap 0: a disconnected
    or periodic graph).
    """
    _check_world(world_size)
    if topology == "custom":
        w = parse_custom(custom)
        if w.shape[0] != world_size:
            raise ConfigError(
                f"mixing_matrix is {w.shape[0]} x {w.shape[0]} but the world size is {world_size}"
            )
    else:
        w = metropolis_hastings(adjacency(topology, world_size))
    gap = spectral_gap(w)
    if gap < MIN_GAP:
        raise ConfigError(
            f"topology {topology} on {world_size} ranks never reaches consensus (spectral gap "
            f"{gap:.3g}): the graph is disconnected or periodic"
        )
    return w


def neighbours(w: Matrix, rank: int) -> dict[int, float]:
    """``{peer: W[rank, peer]}`` for every other rank with a non-zero weight."""
    return {j: float(v) for j, v in enumerate(w[rank]) if j != rank and v > 0}


def spectral_gap(w: Matrix) -> float:
    """``1 - max |λ_i|`` over the eigenvalues of ``W`` other than the top one (``λ_1 = 1``).

    For a symmetric doubly stochastic ``W`` this is ``1 - ‖W - 11ᵀ/k‖₂``: one gossip step shrinks
    the ranks' distance from their mean, ``‖X - X̄‖_F``, by at least the factor ``1 - gap``. It is
    1 for the complete graph (one step reaches the mean), 0 when the graph is disconnected
    (another eigenvalue 1) or periodic (eigenvalue -1), and 1 by convention for one rank. Uses
    ``eigvalsh`` for symmetric input, general eigenvalues (dropping the one of largest real part)
    otherwise.
    """
    k = w.shape[0]
    if k == 1:
        return 1.0
    if np.allclose(w, w.T, rtol=0.0, atol=1e-12):
        lam = np.linalg.eigvalsh(w)  # ascending
        rest = np.abs(lam[:-1])
    else:
        ev = np.linalg.eigvals(w)
        top = int(np.argmax(ev.real))
        rest = np.abs(np.delete(ev, top))
    return float(min(1.0, max(0.0, 1.0 - float(rest.max()))))


def check(topology: str, world_size: int, custom: str | None = None) -> None:
    """Raise ConfigError unless ``topology`` (and ``custom``) can run on ``world_size`` ranks."""
    if topology not in TOPOLOGIES:
        raise ConfigError(f"unknown topology {topology!r}; known: {', '.join(TOPOLOGIES)}")
    if topology != "custom" and custom is not None:
        raise ConfigError(
            f"mixing_matrix is set but topology is {topology!r}; set topology = custom to use it"
        )
    mixing_matrix(topology, world_size, custom)
