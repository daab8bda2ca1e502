"""The sweep's plan: --set axes vs fixed overrides, comma escaping, the cross product and its
names, bad input as one-line errors, and the sweep file's resume rules (launch/sweep.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlbench.cli.main import main
from mlbench.errors import ConfigError
from mlbench.launch import sweep as sw


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("0.1", ["0.1"]),
        ("0.05,0.1", ["0.05", "0.1"]),
        (r"a\,b", ["a,b"]),
        (r"a\,b,c", ["a,b", "c"]),
        ("[82,109],[100,150]", ["[82,109]", "[100,150]"]),
        ("[[0.5,0.5],[0.5,0.5]]", ["[[0.5,0.5],[0.5,0.5]]"]),
        (r"x\\,y", ["x\\", "y"]),  # an escaped backslash, then a separating comma
        (r"C:\data", [r"C:\data"]),  # other backslashes are kept as written
    ],
)
def test_split_values(text: str, values: list[str]) -> None:
    assert sw.split_values(text) == values


def test_parse_sets_separates_axes_from_fixed_overrides() -> None:
    fixed, axes = sw.parse_sets(
        ["data.dataset=a9a", "optim.lr=0.05, 0.1", r"data.name=a\,b", "train.milestones=[1,2]"]
    )
    assert fixed == ["data.dataset=a9a", "data.name=a,b", "train.milestones=[1,2]"]
    assert axes == [sw.Axis("optim.lr", ("0.05", "0.1"))]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["optim.lr"], "must look like KEY=VALUE"),
        (["=1,2"], "must look like KEY=VALUE"),
        (
            [
                "optim.lr=0.1,",
            ],
            "empty value",
        ),
        (["optim.lr=0.1,,0.2"], "empty value"),
        (["optim.lr=0.1,0.1"], "lists a value twice"),
        (["optim.lr=0.1", "optim.lr=0.2"], "given twice"),
        (["algorithm.name=allreduce,local_sgd"], "--algorithm"),
        (["task=a,b"], "one task"),
    ],
)
def test_parse_sets_refuses_bad_input(items: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sw.parse_sets(items)


def test_plan_is_the_cross_product_named_by_its_values() -> None:
    axes = [sw.Axis("optim.lr", ("0.05", "0.1")), sw.Axis("data.batch_size", ("32", "64"))]
    points = sw.plan([1, 2], ["allreduce", "local_sgd"], axes)
    assert len(points) == 2 * 2 * 2 * 2
    assert points[0] == sw.Point(
        "w1-allreduce-lr0.05-batch_size32", 1, "allreduce", ("optim.lr=0.05", "data.batch_size=32")
    )
    assert points[-1].name == "w2-local_sgd-lr0.1-batch_size64"
    assert [p.workers for p in points] == [1] * 8 + [2] * 8
    assert len({p.name for p in points}) == 16
    # no axis: one point per worker count and scheme
    assert [p.name for p in sw.plan([4], ["allreduce"], [])] == ["w4-allreduce"]


def test_plan_names_axes_by_whole_key_when_their_last_parts_clash() -> None:
    axes = [sw.Axis("optim.lr", ("0.1", "0.2")), sw.Axis("algorithm.lr", ("1",))]
    names = [p.name for p in sw.plan([1], ["x"], axes)]
    assert names == ["w1-x-optim.lr0.1-algorithm.lr1", "w1-x-optim.lr0.2-algorithm.lr1"]


@pytest.mark.parametrize(
    ("workers", "algorithms", "message"),
    [
        ([0, 2], ["allreduce"], "at least 1"),
        ([2, 2], ["allreduce"], "worker count twice"),
        ([1], ["allreduce", "allreduce"], "scheme twice"),
    ],
)
def test_plan_refuses_bad_axes(workers: list[int], algorithms: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sw.plan(workers, algorithms, [])


def test_plan_sweeps_networks_as_an_axis() -> None:
    nets = ["bandwidth=1gbit", "bandwidth=20mbit,loss=0.01"]
    points = sw.plan([2], ["allreduce", "topk"], [sw.Axis("optim.lr", ("0.1", "0.2"))], nets)
    assert len(points) == 2 * 2 * 2
    assert points[0].name == "w2-allreduce-net1gbit-lr0.1" and points[0].network == nets[0]
    assert points[3].name == "w2-allreduce-net20mbit_loss0.01-lr0.2"
    entries = [sw.entry(p, 0, 42) for p in points]
    assert entries[3]["network"] == nets[1]
    assert "network" not in sw.entry(sw.plan([2], ["allreduce"], [])[0], 0, 42)  # as before
    # a stored sweep planned on another network is another sweep
    other = [dict(e, network="bandwidth=2gbit") for e in entries]
    with pytest.raises(ConfigError, match="planned differently"):
        sw.merge(entries, other)


def test_plan_sweeps_fault_sets_as_an_axis() -> None:
    kill = "kill:rank=1,step=30"
    faults = sw.fault_axis([["none", kill, f"{kill}+slow:rank=0,factor=2"]])
    assert faults == [(), (kill,), (kill, "slow:rank=0,factor=2")]
    points = sw.plan(
        [2], ["allreduce"], [sw.Axis("train.checkpoint_every_steps", ("20", "null"))], faults=faults
    )
    assert [p.name for p in points] == [
        "w2-allreduce-nofault-checkpoint_every_steps20",
        "w2-allreduce-nofault-checkpoint_every_stepsnull",
        "w2-allreduce-kill_rank1_step30-checkpoint_every_steps20",
        "w2-allreduce-kill_rank1_step30-checkpoint_every_stepsnull",
        "w2-allreduce-kill_rank1_step30_slow_rank0_factor2-checkpoint_every_steps20",
        "w2-allreduce-kill_rank1_step30_slow_rank0_factor2-checkpoint_every_stepsnull",
    ]
    entries = [sw.entry(p, 0, 42) for p in points]
    assert "faults" not in entries[0] and entries[2]["faults"] == [kill]
    with pytest.raises(ConfigError, match="planned differently"):  # another fault: another sweep
        sw.merge(entries, [dict(e, faults=["kill:rank=0,step=30"]) for e in entries])
    # one spec, or one per --fault (as `mlbench run` takes them): every point, not in the name
    (fixed,) = sw.fault_axis([[kill], ["slow:rank=0,factor=2"]])
    assert fixed == (kill, "slow:rank=0,factor=2")
    assert sw.plan([2], ["allreduce"], [], faults=[fixed])[0].name == "w2-allreduce"
    assert sw.fault_axis([]) == [()]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([["none", "kill:rank=1,step=3"], ["slow:rank=0,factor=2"]], "list a fault axis"),
        ([["none", "none"]], "lists a fault set twice"),
        ([["kill:rank=1,step=3+none"]], "inside A\\+B"),
    ],
)
def test_fault_axis_refuses_bad_input(groups: list[list[str]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sw.fault_axis(groups)


def test_merge_keeps_what_ran_and_refuses_another_plan() -> None:
    points = sw.plan([1, 2], ["allreduce"], [])
    planned = [sw.entry(p, r, 42 + r) for r in range(2) for p in points]
    stored = [dict(e) for e in planned]
    stored[0].update(state="finished", run_id="r0", run_dir="/runs/r0")
    stored[1].update(state="failed", run_id="r1", run_dir="/runs/r1")
    merged = sw.merge(planned, stored)
    assert merged[0]["run_id"] == "r0"
    assert [e["state"] for e in sw.to_run(merged)] == ["failed", "pending", "pending"]
    reseeded = [dict(e, seed=e["seed"] + 1) for e in planned]
    with pytest.raises(ConfigError, match="planned differently"):
        sw.merge(reseeded, stored)
    with pytest.raises(ConfigError, match="holds 4 planned runs, this command plans 2"):
        sw.merge(planned[:2], stored)


def test_sweep_file_round_trip_and_lock(tmp_path: Path) -> None:
    data = {"format": 1, "sweep_id": "s", "points": []}
    sw.write(tmp_path, data)
    assert sw.read(tmp_path) == data
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]  # no temporary left
    assert sw.locate(str(tmp_path), tmp_path / "elsewhere") == tmp_path.resolve()
    with sw.locked(tmp_path), pytest.raises(ConfigError, match="another process"):  # noqa: SIM117
        with sw.locked(tmp_path):
            pass
    with pytest.raises(ConfigError, match="invalid sweep id"):
        sw.check_sweep_id("../x")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "optim.lr=0.1,,0.2"], "empty value"),
        (["--set", "train.max_epochs=2,x"], "train.max_epochs"),  # each value is type-checked
        (["--set", "seed=4294967295", "--repeats", "2"], "seed"),  # base + repeat out of range
        (["--workers", "1", "1"], "worker count twice"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--engine", "slurm", "--nproc-per-node", "2", "--workers", "3"], "multiple of 2"),
        (["--network", "bandwidth=1gbit", "bandwidth=1gbit"], "--network lists a spec twice"),
        (["--network", "bandwidth=1gbit", "bandwidth=fast"], "is not a rate"),
        (["--fault", "none", "kill:rank=2,step=5"], "rank 2 does not exist"),
        (["--fault", "none", "explode:rank=1"], "--fault"),
    ],
)
def test_cli_refuses_a_bad_sweep_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sweep", "epsilon-logreg", "--sweeps-dir", str(tmp_path), "--dry-run", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mlbench: error:") and err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())  # nothing planned is written


def test_cli_dry_run_prints_the_plan_with_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            *("sweep", "epsilon-logreg", "--workers", "1", "2", "--repeats", "2", "--dry-run"),
            *("--set", "optim.lr=0.05,0.1", "--set", "seed=7", "--sweeps-dir", str(tmp_path)),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if "-allreduce-lr" in line]
    assert len(rows) == 8
    seeds = sorted(int(r.split("│")[-2]) for r in rows)
    assert seeds == [7, 7, 7, 7, 8, 8, 8, 8]
