"""Bad input is a one-line error with exit code 2 — never a traceback, never a started worker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..support.libsvm_files import write_a9a
from .helpers import leftover_workers, mlbench


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "no-such-task"], "unknown task 'no-such-task'"),
        (["run", "epsilon-logreg", "--set", "optim.lr=fast"], "optim.lr: expected a number"),
        (["run", "epsilon-logreg", "--set", "optim.lrr=1"], "valid keys here: optim.lr,"),
        (["run", "epsilon-logreg", "--set", "novalue"], "must look like key=value"),
        (["run", "epsilon-logreg", "--workers", "0"], "--workers must be at least 1"),
        (["run", "epsilon-logreg", "--data-dir", "/nonexistent/dir"], "does not exist"),
        (["run", "epsilon-logreg", "--algorithm", "nope"], "unknown algorithm 'nope'"),
        (
            ["run", "epsilon-logreg", "--algorithm", "tests.e2e.faulty:NotAnAlgorithm"],
            "is not a subclass",
        ),
        (["run", "cifar10-resnet20", "--set", "model.depth=21"], "model.depth: 21 is not one of"),
        (["run", "epsilon-logreg", "--config", "/nonexistent.toml"], "cannot read config file"),
        (["tasks", "--show", "nope"], "unknown task"),
        # scheme options are checked before any process starts
        (
            [
                "run",
                "epsilon-logreg",
                "--algorithm",
                "powersgd",
                "--set",
                "algorithm.matrix_rank=0",
            ],
            "algorithm.matrix_rank",
        ),
        (
            ["run", "epsilon-logreg", "--algorithm", "topk", "--set", "algorithm.fraction=1.5"],
            "algorithm.fraction",
        ),
        (
            ["run", "epsilon-logreg", "--algorithm", "randomk", "--set", "algorithm.fraction=0"],
            "algorithm.fraction",
        ),
        (
            [
                "run",
                "epsilon-logreg",
                "--algorithm",
                "gossip",
                "--workers",
                "2",
                "--set",
                "algorithm.topology=torus",
            ],
            "torus",
        ),
        (
            [
                "run",
                "epsilon-logreg",
                "--algorithm",
                "gossip",
                "--workers",
                "2",
                "--set",
                "algorithm.topology=custom",
                "--set",
                "algorithm.mixing_matrix=[[1,0],[0,1]]",
            ],
            "consensus",
        ),
        (
            [
                "run",
                "epsilon-logreg",
                "--algorithm",
                "localsgd",
                "--set",
                "algorithm.local_steps=0",
            ],
            "algorithm.local_steps",
        ),
        (
            ["run", "epsilon-logreg", "--algorithm", "adam", "--set", "algorithm.adam_betas=0.9"],
            "algorithm.adam_betas",
        ),
        (["run", "epsilon-logreg", "--set", "train.precision=fp8"], "train.precision"),
        # an integer past its bound fails here, not inside torch.manual_seed in a worker
        (
            ["run", "epsilon-logreg", "--set", "seed=100000000000000000000000"],
            "seed: 100000000000000000000000 is above the maximum 4294967295",
        ),
        (
            ["run", "epsilon-logreg", "--set", "train.max_steps=1e23"],
            "train.max_steps: 99999999999999991611392 is above the maximum 1000000000000",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = mlbench(*args, home=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mlbench: error:") and needle in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_missing_dataset_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--data-dir",
        str(empty),
        "--set",
        "data.dataset=a9a",
        "--set",
        "data.download=false",  # a9a is fetchable: with downloads on, this tests the network
        home=tmp_path,
    )
    assert proc.returncode == 2 and "LIBSVM file a9a[.bz2]" in proc.stderr
    proc = mlbench(
        "run",
        "cifar10-resnet20",
        "--data-dir",
        str(empty),
        "--set",
        "data.download=false",
        home=tmp_path,
    )
    assert proc.returncode == 2 and "CIFAR-10 not found" in proc.stderr


def test_impossible_worker_count(real_data: Path, tmp_path: Path) -> None:
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--workers",
        "400",
        "--data-dir",
        str(real_data),
        "--set",
        "data.dataset=a9a",
        home=tmp_path,
    )
    assert proc.returncode == 2
    assert "400 workers is impossible" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_corrupt_cifar_is_refused(real_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad" / "cifar10" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    src = real_data / "cifar10" / "cifar-10-batches-py"
    for f in src.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = (bad / "data_batch_3").read_bytes()
    (bad / "data_batch_3").write_bytes(data[: len(data) // 2])  # truncated download
    proc = mlbench("run", "cifar10-resnet20", "--data-dir", str(tmp_path / "bad"), home=tmp_path)
    assert proc.returncode == 2
    assert "data_batch_3 is corrupt or truncated" in proc.stderr


def test_help_is_instant_and_explains(tmp_path: Path) -> None:
    proc = mlbench("run", "--help", home=tmp_path)
    assert proc.returncode == 0
    for flag in ("--workers", "--goal", "--data-dir", "--set", "--time-limit", "--runs-dir"):
        assert flag in proc.stdout


def _assert_refused(proc: subprocess.CompletedProcess[str], home: Path, needle: str) -> str:
    """Exit 2, one line naming the problem, and nothing started: no run directory, no rank
    output files anywhere, no worker process."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mlbench: error:") and needle in lines[0], lines[0]
    assert not (home / "runs").exists()
    assert list(home.rglob("rank-*")) == []
    assert leftover_workers(home) == []
    return lines[0]


def _run_a9a(data: Path, home: Path, *extra: str, dataset: str = "a9a"):
    return mlbench(
        "run",
        "epsilon-logreg",
        "--data-dir",
        str(data),
        "--set",
        f"data.dataset={dataset}",
        "--set",
        "data.download=false",
        "--set",
        "train.max_steps=2",
        "--runs-dir",
        str(home / "runs"),
        *extra,
        home=home,
    )


@pytest.mark.parametrize(
    ("dataset", "replace", "needle"),
    [
        ("a9a", {400: "+1 3:1 11:1 14"}, "a9a, line 400: '14' is not index:value"),  # truncated
        ("a9a", {57: "<html>oops</html>\n"}, "a9a, line 57: label '<html>oops</html>' is not"),
        ("a9a", {12: "7 3:1 11:1\n"}, "a9a, line 12: label 7 is not binary"),
        ("a9a", {99: "+1 3:1 8000:1\n"}, "a9a, line 99: feature index 8000, but a9a has 123"),
        ("mine", {5: "+1 3:1 100000000:1\n"}, "'mine' would take 200.0 GB per worker"),
    ],
)
def test_bad_libsvm_content_is_exit_2_before_any_worker(
    tmp_path: Path, dataset: str, replace: dict[int, str], needle: str
) -> None:
    write_a9a(tmp_path / "data", replace=replace, name=dataset)
    proc = _run_a9a(tmp_path / "data", tmp_path, "--workers", "2", dataset=dataset)
    line = _assert_refused(proc, tmp_path, needle)
    assert str(tmp_path / "data" / "libsvm" / dataset) in line


def test_oversubscribed_cores_are_refused_unless_asked(tmp_path: Path) -> None:
    """More threads than cores (here one worker with cores + 1 threads, so the test costs the
    same on any machine) is exit 2 naming the cores and the flag; with the flag it runs."""
    cores = os.cpu_count() or 1
    write_a9a(tmp_path / "data")
    args = ("--workers", "1", "--threads-per-worker", str(cores + 1))
    proc = _run_a9a(tmp_path / "data", tmp_path, *args)
    _assert_refused(proc, tmp_path, f"on {cores} CPU core")
    assert "--oversubscribe" in proc.stderr
    proc = _run_a9a(tmp_path / "data", tmp_path, *args, "--oversubscribe")
    assert proc.returncode == 0, proc.stderr
    assert "warning: " in proc.stderr and f"on {cores} CPU core" in proc.stderr


@pytest.mark.skipif((os.cpu_count() or 1) >= 64, reason="64 workers fit this machine's cores")
def test_64_workers_on_fewer_cores_are_refused(real_data: Path, tmp_path: Path) -> None:
    proc = _run_a9a(real_data, tmp_path, "--workers", "64")
    _assert_refused(proc, tmp_path, "64 workers × 1 thread = 64 threads")


def test_unwritable_runs_dir_is_exit_2_naming_the_path_and_the_error(tmp_path: Path) -> None:
    """Tests run as root, where a read-only chmod stops nothing: a runs dir whose parent is a
    regular file fails the same way for everyone (ENOTDIR)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    write_a9a(tmp_path / "data")
    proc = mlbench(
        "run",
        "epsilon-logreg",
        "--data-dir",
        str(tmp_path / "data"),
        "--set",
        "data.dataset=a9a",
        "--set",
        "data.download=false",
        "--runs-dir",
        str(blocker / "runs"),
        home=tmp_path,
    )
    line = _assert_refused(proc, tmp_path, str(blocker / "runs"))
    assert "Not a directory" in line
