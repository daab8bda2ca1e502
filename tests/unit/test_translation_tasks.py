"""Tasks 4a/4b without workers: the accumulation each derives from k (the global batch fixed),
the checks before any worker starts, and the recorded goal."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlbench.errors import ConfigError, DataError
from mlbench.runs import resolve_config, validate_run


@pytest.mark.parametrize(
    ("k", "u", "micro"),
    # at most 128 sentences per micro-batch, 2,048 per step in all
    [(1, 16, 128), (2, 8, 128), (4, 4, 128), (16, 1, 128), (32, 1, 64), (64, 1, 32)],
)
def test_gnmt_accumulation_keeps_the_global_batch(k: int, u: int, micro: int) -> None:
    task, cfg = resolve_config("wmt16-gnmt")
    assert task.accumulation(cfg, k) == u
    assert k * u * micro == 2048


def test_gnmt_refuses_a_worker_count_that_cannot_split_the_batch() -> None:
    task, cfg = resolve_config("wmt16-gnmt")
    with pytest.raises(ConfigError, match="cannot be split evenly over 3 workers"):
        validate_run(task, cfg, 3)
    # a global batch it divides is fine (non-official, but possible)
    task, cfg = resolve_config("wmt16-gnmt", overrides=["data.global_batch=1536"])
    validate_run(task, cfg, 3)
    assert task.accumulation(cfg, 3) == 4  # 3 × 4 × 128


@pytest.mark.parametrize(
    ("k", "u", "budget"),
    # the reference: u = max(1, 2^17 // (8192·k)), each micro-batch full at 2^17/(k·u) tokens
    [(1, 16, 8192), (2, 8, 8192), (16, 1, 8192), (32, 1, 4096)],
)
def test_transformer_token_budget(k: int, u: int, budget: int) -> None:
    from mlbench.tasks.wmt17_transformer import WMT17Config

    task, cfg = resolve_config("wmt17-transformer")
    assert isinstance(cfg, WMT17Config)
    assert task.accumulation(cfg, k) == u
    assert task.micro_tokens(cfg, k) == budget  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["wmt16-gnmt", "wmt17-transformer"])
def test_accumulation_and_normalisation_are_the_tasks(name: str) -> None:
    task, cfg = resolve_config(name, overrides=["train.accumulate=2"])
    with pytest.raises(ConfigError, match="derived from the global batch"):
        validate_run(task, cfg, 1)
    task, cfg = resolve_config(name, overrides=["train.normalize=mean"])
    with pytest.raises(ConfigError, match="must be 'global'"):
        validate_run(task, cfg, 1)


@pytest.mark.parametrize("name", ["wmt16-gnmt", "wmt17-transformer"])
def test_unprepared_data_is_one_line_that_says_how(name: str, tmp_path: Path) -> None:
    task, cfg = resolve_config(name, overrides=[f"data.dir={tmp_path}"])
    with pytest.raises(DataError, match=r"mlbench data prepare wmt1[67] --source DIR") as exc:
        task.prepare_data(cfg)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("name", ["wmt16-gnmt", "wmt17-transformer"])
def test_prepared_data_is_checked_and_marked_non_official(name: str, real_data: Path) -> None:
    task, cfg = resolve_config(name, overrides=[f"data.dir={real_data}"])
    info = task.prepare_data(cfg)
    assert info.val_size == 3003
    # the test fixture's data: Multi30k and a 2k vocabulary, both recorded as departures
    assert any("multi30k/train" in i for i in info.issues), info.issues
    assert any("32,000" in i for i in info.issues), info.issues
    goal = task.describe_goal(cfg)
    assert goal["metric"] == "bleu" and goal["mode"] == "max"
    assert "tok:intl" in goal["signature"] and "case:lc" in goal["signature"]
