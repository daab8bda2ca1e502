"""Mixing matrices of the gossip topologies: structure, weights, spectral gaps, validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mlbench.algorithms.topology import (
    adjacency,
    check,
    metropolis_hastings,
    mixing_matrix,
    neighbours,
    parse_custom,
    spectral_gap,
    torus_shape,
)
from mlbench.errors import ConfigError

SIZES = range(1, 10)
TORUS_SIZES = [4, 6, 8, 9]


def _valid(topology: str) -> list[int]:
    return TORUS_SIZES if topology == "torus" else list(SIZES)


CASES = [(top, k) for top in ("ring", "torus", "exponential", "complete") for k in _valid(top)]


@pytest.mark.parametrize(("topology", "k"), CASES)
def test_symmetric_doubly_stochastic_and_uniform(topology: str, k: int) -> None:
    w = mixing_matrix(topology, k)
    assert w.shape == (k, k) and w.dtype == np.float64
    np.testing.assert_array_equal(w, w.T)
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
    # built-in graphs are regular: 1/(d+1) on the rank itself and on each neighbour
    degrees = {len(neighbours(w, i)) for i in range(k)}
    assert len(degrees) == 1
    (d,) = degrees
    for i in range(k):
        assert w[i, i] == pytest.approx(1 / (d + 1))
        assert all(v == pytest.approx(1 / (d + 1)) for v in neighbours(w, i).values())
    assert 0 < spectral_gap(w) <= 1


def test_small_rings() -> None:
    np.testing.assert_array_equal(mixing_matrix("ring", 1), [[1.0]])
    np.testing.assert_array_equal(mixing_matrix("ring", 2), [[0.5, 0.5], [0.5, 0.5]])
    assert neighbours(mixing_matrix("ring", 2), 0) == {1: 0.5}
    assert neighbours(mixing_matrix("ring", 1), 0) == {}
    w5 = mixing_matrix("ring", 5)
    assert neighbours(w5, 0) == pytest.approx({1: 1 / 3, 4: 1 / 3})


@pytest.mark.parametrize("k", range(3, 10))
def test_ring_spectral_gap_matches_circulant_eigenvalues(k: int) -> None:
    # W = (I + P + P^T)/3 is circulant: eigenvalues 1/3 + 2/3 cos(2πm/k), m = 0..k-1
    lam = [1 / 3 + 2 / 3 * math.cos(2 * math.pi * m / k) for m in range(1, k)]
    assert spectral_gap(mixing_matrix("ring", k)) == pytest.approx(1 - max(map(abs, lam)))


def test_known_spectral_gaps() -> None:
    # ring of 4: eigenvalues 1, 1/3, -1/3, 1/3 → gap 2/3
    assert spectral_gap(mixing_matrix("ring", 4)) == pytest.approx(2 / 3)
    # ring of 3 with weights 1/3 is the complete graph
    assert spectral_gap(mixing_matrix("ring", 3)) == pytest.approx(1.0)
    for k in SIZES:
        assert spectral_gap(mixing_matrix("complete", k)) == pytest.approx(1.0)
    # 3 x 3 torus, weights 1/5: eigenvalues (1 + 2cos(2πa/3) + 2cos(2πb/3))/5 ∈ {1, 2/5, -1/5}
    assert spectral_gap(mixing_matrix("torus", 9)) == pytest.approx(3 / 5)
    # disconnected (two blocks) and periodic (swap) matrices have gap 0
    assert spectral_gap(np.kron(np.eye(2), np.full((2, 2), 0.5))) == pytest.approx(0.0)
    assert spectral_gap(np.array([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.0)


def test_gap_bounds_one_step_contraction() -> None:
    rng = np.random.default_rng(0)
    for topology, k in CASES:
        w = mixing_matrix(topology, k)
        x = rng.normal(size=(k, 5))
        dev0 = np.linalg.norm(x - x.mean(0))
        dev1 = np.linalg.norm(w @ x - x.mean(0))
        assert dev1 <= (1 - spectral_gap(w)) * dev0 + 1e-12
        np.testing.assert_allclose((w @ x).mean(0), x.mean(0), atol=1e-12)


@pytest.mark.parametrize(
    ("k", "shape"), [(4, (2, 2)), (6, (2, 3)), (8, (2, 4)), (9, (3, 3)), (12, (3, 4)),
                     (16, (4, 4)), (18, (3, 6)), (30, (5, 6)), (49, (7, 7))]
)  # fmt: skip
def test_torus_shape_is_as_square_as_possible(k: int, shape: tuple[int, int]) -> None:
    assert torus_shape(k) == shape


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 11, 13])
def test_torus_rejects_sizes_without_2d_factorisation(k: int) -> None:
    with pytest.raises(ConfigError, match=f"torus.*{k} does not"):
        mixing_matrix("torus", k)
    with pytest.raises(ConfigError):
        check("torus", k)


def test_torus_neighbours() -> None:
    # 3 x 3, row-major: rank 4 is the centre (1, 1)
    assert adjacency("torus", 9)[4] == {1, 7, 3, 5}
    assert adjacency("torus", 9)[0] == {6, 3, 2, 1}
    # 2 x 3: the two vertical neighbours coincide → degree 3
    assert adjacency("torus", 6)[0] == {3, 2, 1}
    assert len(neighbours(mixing_matrix("torus", 6), 0)) == 3


def test_exponential_neighbours() -> None:
    assert adjacency("exponential", 8)[0] == {1, 2, 4, 6, 7}  # ±1, ±2, ±4
    assert adjacency("exponential", 8)[3] == {2, 4, 1, 5, 7}
    assert adjacency("exponential", 6)[0] == {1, 5, 2, 4}  # ±4 ≡ ∓2
    for k in (2, 3, 4, 5):  # small exponential graphs are complete
        np.testing.assert_allclose(mixing_matrix("exponential", k), mixing_matrix("complete", k))
    w = mixing_matrix("exponential", 8)
    assert neighbours(w, 0) == pytest.approx(dict.fromkeys([1, 2, 4, 6, 7], 1 / 6))


def test_metropolis_hastings_on_irregular_graph() -> None:
    # path 0-1-2: degrees 1, 2, 1 → edge weights 1/3, diagonals 2/3, 1/3, 2/3
    w = metropolis_hastings([{1}, {0, 2}, {1}])
    np.testing.assert_allclose(
        w, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]], atol=1e-15
    )
    # star with 3 leaves: hub degree 3 → every edge 1/4
    w = metropolis_hastings([{1, 2, 3}, {0}, {0}, {0}])
    np.testing.assert_allclose(w[0], [1 / 4] * 4)
    np.testing.assert_allclose(w[1], [1 / 4, 3 / 4, 0, 0])
    np.testing.assert_allclose(w.sum(0), 1.0)


# ------------------------------------------------------------------ custom
PATH3 = [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]]


def test_custom_from_json_text_rows_and_file(tmp_path: Path) -> None:
    want = np.array(PATH3)
    np.testing.assert_array_equal(mixing_matrix("custom", 3, json.dumps(PATH3)), want)
    np.testing.assert_array_equal(mixing_matrix("custom", 3, PATH3), want)
    path = tmp_path / "w.json"
    path.write_text(json.dumps(PATH3))
    np.testing.assert_array_equal(mixing_matrix("custom", 3, str(path)), want)
    check("custom", 3, str(path))
    np.testing.assert_array_equal(mixing_matrix("custom", 1, "[[1]]"), [[1.0]])


@pytest.mark.parametrize(
    ("custom", "match"),
    [
        (None, "needs mixing_matrix"),
        ("", "empty"),
        ("[[0.5, 0.5], [0.5", "invalid JSON"),
        ("/no/such/file.json", "neither a JSON list of rows nor an existing file"),
        ("{}", "non-empty list of rows"),
        ("[]", "non-empty list of rows"),
        ("[1, 0]", "row 0 is not a list"),
        ("[[0.5, 0.5], [0.5]]", "not square: row 1 has 1 entries, expected 2"),
        ('[[0.5, "a"], [0.5, 0.5]]', r"\[0\]\[1\] = 'a' is not a finite number"),
        ("[[true, 0], [0, 1]]", "is not a finite number"),
        ("[[NaN, 0], [0, 1]]", "is not a finite number"),
        ("[[1.5, -0.5], [-0.5, 1.5]]", r"\[0\]\[1\] = -0.5 is negative"),
        ("[[0.5, 0.4], [0.5, 0.6]]", "row 0 sums to 0.9"),
        ("[[0.5, 0.5], [0.6, 0.5]]", "row 1 sums to 1.1, not 1"),
        ("[[0.5, 0.5], [0.6, 0.4]]", "column 0 sums to 1.1, not 1"),
        ("[[0.5, 0.5, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]]", "column 0 sums to"),
        ("[[0.5, 0.25, 0.25], [0.5, 0.5, 0], [0, 0.25, 0.75]]", r"not symmetric: \[0\]\[1\]"),
        ("[[0, 1], [1, 0]]", "never reaches consensus"),  # periodic
        ("[[1, 0], [0, 1]]", "never reaches consensus"),  # disconnected
    ],
)
def test_custom_rejects_invalid_matrices(custom: str | None, match: str) -> None:
    k = 3 if custom and custom.count("[") == 4 else 2
    with pytest.raises(ConfigError, match=match):
        mixing_matrix("custom", k, custom)


def test_custom_checks_size_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="3 x 3 but the world size is 4"):
        mixing_matrix("custom", 4, PATH3)
    with pytest.raises(ConfigError, match="neither"):
        parse_custom(str(tmp_path))  # a directory is not a file
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        parse_custom(str(bad))


def test_check_rejects_bad_requests() -> None:
    with pytest.raises(ConfigError, match="unknown topology 'star'"):
        check("star", 4)
    with pytest.raises(ConfigError, match="set topology = custom"):
        check("ring", 3, json.dumps(PATH3))
    with pytest.raises(ConfigError, match="world size must be a positive integer"):
        mixing_matrix("ring", 0)
    for top in ("ring", "exponential", "complete"):
        check(top, 1)
