"""The real two-node Slurm every test here runs against (tests/support/slurm.py), started once
per session. A Slurm that cannot start fails these tests with the reason — CI must not pass by
skipping them; a developer without root or Slurm sets ``MLBENCH_SKIP_SLURM=1`` to skip them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support.slurm import OPT_OUT, SlurmCluster, SlurmUnavailable


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    if os.environ.get(OPT_OUT, "") in ("1", "true", "yes"):
        pytest.skip(f"{OPT_OUT} is set: the real-Slurm tests are skipped")
    # not under pytest's tmp_path: slurmd's spool and socket paths must stay short
    root = Path(tempfile.mkdtemp(prefix="mlbench-slurm-"))
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        cluster.stop()
        pytest.fail(f"the real-Slurm tests cannot run: {exc}", pytrace=False)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # the clients: sbatch, squeue, ... and the CLI
    try:
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
