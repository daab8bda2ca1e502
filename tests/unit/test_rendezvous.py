"""dist.rendezvous_from_env: torchrun, Slurm and Kubernetes Indexed Job variables; the errors."""

from __future__ import annotations

import pytest

from mlbench.dist import first_host, rendezvous_from_env
from mlbench.errors import ConfigError


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [
        ("node01", "node01"),
        ("node[03-05,9]", "node03"),
        ("gpu[7],cpu[1-2]", "gpu7"),
        ("a1,b2", "a1"),
        ("rack1-n[010-012]-ib", "rack1-n010-ib"),
    ],
)
def test_first_host(nodelist: str, first: str) -> None:
    assert first_host(nodelist) == first


def test_torchrun_variables_win() -> None:
    env = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "7",
    }
    env |= {"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}
    rv = rendezvous_from_env(env)
    assert (rv.rank, rv.world_size, rv.local_rank, rv.master_addr, rv.master_port) == (
        1,
        2,
        1,
        "h",
        7,
    )
    assert rv.source == "torchrun"


def test_slurm_variables() -> None:
    env = {
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "node[12-13]",
        "SLURM_JOB_ID": "123456",
    }
    rv = rendezvous_from_env(env)
    assert (rv.rank, rv.world_size, rv.local_rank, rv.master_addr) == (3, 4, 1, "node12")
    assert rv.master_port == 15000 + 123456 % 20000 and rv.source == "slurm"
    # an explicit master wins over the node list
    assert rendezvous_from_env(env | {"MASTER_ADDR": "login", "MASTER_PORT": "9"}).master_addr == (
        "login"
    )


def test_kubernetes_indexed_job() -> None:
    env = {
        "JOB_COMPLETION_INDEX": "2",
        "WORLD_SIZE": "3",
        "MASTER_ADDR": "run-0.run",
        "MASTER_PORT": "29400",
    }
    rv = rendezvous_from_env(env)
    assert (rv.rank, rv.world_size, rv.master_addr, rv.source) == (2, 3, "run-0.run", "kubernetes")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1"},
            "set MASTER_ADDR",
        ),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "SLURM_JOB_NODELIST"),
        ({"JOB_COMPLETION_INDEX": "0", "WORLD_SIZE": "2"}, "headless Service"),
        ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "outside"),
        ({"RANK": "x"}, "not an integer"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "MASTER_PORT is not set"),
    ],
)
def test_multi_rank_without_master_fails_loudly(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        rendezvous_from_env(env)


def test_single_process_needs_nothing() -> None:
    rv = rendezvous_from_env({})
    assert (rv.rank, rv.world_size, rv.master_addr, rv.source) == (0, 1, "127.0.0.1", "single")
    assert 0 < rv.master_port < 65536
