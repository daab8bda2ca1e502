"""Bad input is a one-line error with exit code 2 — never a traceback, never a started worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import mlbench


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
