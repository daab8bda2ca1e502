"""The master's Slurm executor (``mlbench serve --executor slurm``): admitted runs become Slurm
jobs, submitted from the machine the master runs on — a login node of the cluster.

Each run is one ``mlbench run --engine slurm`` launcher process on the login node, the same code
path as a user's command (the :class:`~mlbench.server.executor.LocalExecutor`'s, with the engine
switched): it prepares the run directory on the shared filesystem, submits the batch job, uploads
the ranks' events to this master as they are written (so the run is live in the dashboard), and
writes result.json — rank 0's, or one rebuilt from the events when the job failed.

The reference adds the Slurm job to the launcher: the launcher records the job id in
``RUN/slurm-job.json`` when it submits, so the run is found through Slurm itself too — ``alive``
holds while the launcher runs *or* ``squeue`` still lists the job (a launcher that died with its
login node leaves the job running, and the master keeps watching it), and ``stop`` cancels the job
with ``scancel`` when no launcher is there to do it.

Slurm queues jobs itself; the master's capacity (``--capacity-workers``) still bounds how many
ranks it has submitted at once, so a shared cluster's queue is not flooded by one master.
Submission over SSH (with the user's own key) is not implemented: run the master on the login
node (docs/deploy.md#slurm).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbench.server.executor import SLURM, LocalExecutor, run_files


@dataclass
class SlurmPlacement:
    """Where every run of this master goes: ``nproc_per_node`` ranks per node (a run of W
    workers takes W / nproc_per_node nodes), the GPUs per node, partition and time limit."""

    nproc_per_node: int = 1
    gpus_per_node: int = 0
    partition: str | None = None
    time: str | None = None


class SlurmExecutor(LocalExecutor):
    """Runs each admitted run as a Slurm job through an ``mlbench run --engine slurm`` launcher.

    Its reference: the local one with ``kind: "slurm"`` and ``nodes``; the job id is read from the
    run directory (the launcher learns it only once sbatch answers)."""

    kind = SLURM

    def __init__(
        self,
        runs_dir: Path,
        master_url: str,
        capacity_workers: int = 1,
        placement: SlurmPlacement | None = None,
    ) -> None:
        super().__init__(runs_dir, master_url, capacity_workers)
        self.placement = placement or SlurmPlacement()

    def nodes(self, workers: int) -> int:
        return max(1, workers // self.placement.nproc_per_node)

    def command(
        self, run_id: str, config_file: Path, task: str, workers: int, backend: str
    ) -> list[str]:
        """``mlbench run --engine slurm``. Threads per rank are left to each node's agent (its
        cores over its ranks): the master's own cores say nothing about the compute nodes. A
        worker count that is not a multiple of the ranks per node is refused by the launcher,
        and the run fails with its words."""
        p = self.placement
        cmd = [
            *self.base_command(run_id, config_file, task, workers, backend),
            *("--engine", "slurm", "--nodes", str(self.nodes(workers))),
            *("--nproc-per-node", str(p.nproc_per_node)),
        ]
        if p.gpus_per_node:
            cmd += ["--gpus-per-node", str(p.gpus_per_node)]
        if p.partition:
            cmd += ["--partition", p.partition]
        if p.time:
            cmd += ["--time", p.time]
        return cmd

    def launch(
        self,
        run_id: str,
        config: dict[str, Any],
        workers: int,
        backend: str,
        upload_token: str,
    ) -> dict[str, Any]:
        ref = super().launch(run_id, config, workers, backend, upload_token)
        ref["nodes"] = self.nodes(workers)
        return ref

    def job_id(self, ref: dict[str, Any]) -> str | None:
        from mlbench.launch.slurm import read_job_id

        run_dir = run_files(ref)
        return read_job_id(run_dir) if run_dir is not None else None

    def job_active(self, ref: dict[str, Any]) -> bool:
        """Does Slurm still list the run's job (pending, running or completing)?"""
        from mlbench.launch.slurm import ACTIVE_STATES, SlurmError, queue_state

        job_id = self.job_id(ref)
        if job_id is None:
            return False
        try:
            return queue_state(job_id) in ACTIVE_STATES
        except SlurmError:
            return False

    def alive(self, ref: dict[str, Any]) -> bool:
        return super().alive(ref) or self.job_active(ref)

    def stop(self, ref: dict[str, Any]) -> None:
        """SIGTERM the launcher (it cancels the job and records the run as cancelled); with no
        launcher left, ``scancel`` the job directly."""
        from mlbench.launch.slurm import SlurmError, cancel

        if LocalExecutor.alive(self, ref):
            super().stop(ref)
        elif (job_id := self.job_id(ref)) is not None:
            with contextlib.suppress(SlurmError):
                cancel(job_id)
