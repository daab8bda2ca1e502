"""launch.network: the ``--network`` spec, the host check (root, ip, tc) and the record — what is
refused before anything exists. The real namespaces and shaping are tested in
tests/e2e/test_network.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mlbench.errors import ConfigError
from mlbench.launch import network
from mlbench.launch.network import (
    TOLERANCE,
    NetworkError,
    NetworkSpec,
    loss_bytecode,
    parse_rate,
    parse_spec,
    preflight,
    rank_address,
    record,
)
from mlbench.launch.session import LaunchRequest, LaunchSession

from ..support.libsvm_files import write_a9a


@pytest.mark.parametrize(
    ("text", "bps"),
    [("50mbit", 50e6), ("1gbit", 1e9), ("10Gbit", 1e10), ("125mbps", 1e9), ("2.5mbit", 2.5e6)],
)
def test_rates_use_tc_units(text, bps):
    assert parse_rate(text) == pytest.approx(bps)


def test_a_full_spec_parses():
    spec = parse_spec("bandwidth=100mbit, loss=1%")
    assert spec.bandwidth_bps == 100e6 and spec.loss == pytest.approx(0.01)
    assert spec.requested() == {"bandwidth_bps": 100e6, "loss": pytest.approx(0.01)}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("loss=0.1", "bandwidth=RATE is required"),
        ("bandwidth=fast", "is not a rate"),
        ("bandwidth=50furlongs", "is not a rate"),
        ("bandwidth=1bit", "below 8 kbit/s"),
        ("bandwidth=50mbit,jitter=1ms", "unknown key 'jitter'"),
        ("bandwidth=50mbit,bandwidth=1gbit", "bandwidth is given twice"),
        ("bandwidth=50mbit,loss=1.5", "must be in [0, 1)"),
        ("bandwidth=50mbit,loss=some", "is not a fraction"),
        ("bandwidth", "must look like KEY=VALUE"),
        ("bandwidth=50mbit,latency=soon", "is not a delay"),
    ],
)
def test_spec_errors_are_one_line(text, needle):
    with pytest.raises(ConfigError) as exc:
        parse_spec(text)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_latency_is_refused_not_claimed():
    with pytest.raises(NetworkError) as exc:
        parse_spec("bandwidth=50mbit,latency=10ms")
    assert "cannot apply a delay" in str(exc.value) and "\n" not in str(exc.value)


def test_preflight_without_root_names_the_uid():
    with pytest.raises(NetworkError, match=r"needs root.*uid 1000"):
        preflight(euid=1000)


def test_preflight_without_tc_names_the_package():
    def which(tool: str, path: str | None = None) -> str | None:
        return None if tool == "tc" else "/usr/sbin/" + tool

    with pytest.raises(NetworkError, match=r"needs `tc` \(package iproute2\)"):
        preflight(euid=0, which=which)


def test_burst_is_small_at_every_rate():
    """A bucket deeper than a few ms of the rate lets a run's start through unshaped
    (CLUSTERS.md §1.4): 2 ms at the rate, at least 16 KiB."""
    assert NetworkSpec(50e6).burst_bytes() == 16 * 1024
    assert NetworkSpec(10e9).burst_bytes() == 2_500_000
    assert NetworkSpec(10e9).burst_bytes() / (10e9 / 8) <= 0.002


def test_loss_bytecode_threshold_is_the_fraction_of_2_32():
    parts = loss_bytecode(0.25).split(",")
    assert parts[0] == "4" and parts[2] == f"53 0 1 {2**30}"
    assert parts[-1].endswith(str(network.DROP_CLASSID))


def test_rank_addresses_are_distinct_and_private():
    addrs = {rank_address(r) for r in range(600)}
    assert len(addrs) == 600 and all(a.startswith("10.213.") for a in addrs)
    assert "10.213.0.0" not in addrs


def test_record_flags_a_bandwidth_off_by_more_than_the_tolerance():
    spec = NetworkSpec(100e6, text="bandwidth=100mbit")
    ok = record(spec, {"bandwidth_bps": 100e6 * (1 - TOLERANCE / 2), "latency_s": 1e-4})
    assert ok["within_tolerance"] and "flag" not in ok
    off = record(spec, {"bandwidth_bps": 40e6, "latency_s": 1e-4})
    assert not off["within_tolerance"] and "60%" in off["flag"]
    missing = record(spec, None)
    assert missing["measured"] is None and not missing["within_tolerance"]
    assert missing["shaping"]["latency_applied"] is False


def _request(tmp_path: Path, **kw) -> LaunchRequest:
    if not (tmp_path / "data").exists():
        write_a9a(tmp_path / "data")
    overrides = ["data.dataset=a9a", f"data.dir={tmp_path / 'data'}", "data.download=false"]
    return LaunchRequest(
        task="epsilon-logreg", overrides=overrides, runs_dir=tmp_path / "runs", **kw
    )


def test_session_refuses_without_root_before_anything_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    s = LaunchSession(_request(tmp_path, workers=2, network="bandwidth=50mbit"))
    with pytest.raises(NetworkError, match="needs root"):
        s.preflight()
    assert not (tmp_path / "runs").exists()


def test_session_refuses_without_tc_on_path(tmp_path, monkeypatch):
    bare = tmp_path / "bin"
    bare.mkdir()
    if ip := shutil.which("ip"):
        (bare / "ip").symlink_to(ip)
    monkeypatch.setenv("PATH", str(bare))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    s = LaunchSession(_request(tmp_path, workers=2, network="bandwidth=50mbit"))
    with pytest.raises(NetworkError, match=r"needs `(ip|tc)`"):
        s.preflight()


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"workers": 1}, "at least 2 workers"),
        ({"workers": 2, "engine": "slurm"}, "not with --engine slurm"),
    ],
)
def test_session_refuses_what_cannot_be_shaped(tmp_path, kw, needle):
    s = LaunchSession(_request(tmp_path, network="bandwidth=50mbit", **kw))
    with pytest.raises(NetworkError, match=needle):
        s.preflight()
