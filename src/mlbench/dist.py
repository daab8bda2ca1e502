"""The process group a worker lives in, and the few collectives the loop itself needs.

Rendezvous comes from the environment the engine sets, and this is the only place that reads it
(:func:`rendezvous_from_env`), in this order:

* torchrun and our local launcher: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``;
* Slurm (``srun``): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the master is
  ``MASTER_ADDR`` if set, else the first host of ``SLURM_JOB_NODELIST``; the port is
  ``MASTER_PORT`` if set, else derived from ``SLURM_JOB_ID`` (so concurrent jobs differ);
* a Kubernetes Indexed Job: ``JOB_COMPLETION_INDEX`` is the rank, ``WORLD_SIZE`` and
  ``MASTER_ADDR`` (the headless Service name of index 0) are given by the engine.

A multi-rank run without a master address is an error that says which variable is missing — not a
silent ``127.0.0.1:29500``, which on a cluster makes every node wait for itself.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mlbench.errors import ConfigError


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (a no-op for one rank)."""
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def all_gather_object(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def synchronize(self) -> None:
        """Wait for queued device work so host clocks measure it (no-op on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def resolve_backend(requested: str) -> str:
    if requested == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if requested == "nccl" and not torch.cuda.is_available():
        raise ConfigError("backend nccl needs CUDA, and no GPU is visible")
    if requested not in ("gloo", "nccl", "mpi"):
        raise ConfigError(f"backend {requested!r} is not one of auto, gloo, nccl, mpi")
    if not dist.is_backend_available(requested):
        raise ConfigError(f"backend {requested!r} is not built into this torch")
    return requested


@dataclass(frozen=True)
class Rendezvous:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # "torchrun", "slurm", "kubernetes" or "single"


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``node[03-05,9],gpu1`` → ``node03``."""
    entry = re.match(r"[^,\[]*(\[[^\]]*\])?[^,]*", nodelist.strip())
    text = entry.group(0) if entry else ""
    bracket = re.search(r"\[([^\]]*)\]", text)
    if not text or (bracket is None and "[" in text):
        raise ConfigError(f"cannot read the first host of SLURM_JOB_NODELIST={nodelist!r}")
    if bracket is None:
        return text
    first = re.split(r"[,-]", bracket.group(1))[0]
    return text[: bracket.start()] + first + text[bracket.end() :]


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"{name}={env[name]!r} is not an integer") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rendezvous_from_env(env: Mapping[str, str] = os.environ) -> Rendezvous:
    """Rank, world size and master address from whichever engine started this process."""
    if "RANK" in env:
        source, rank = "torchrun", _int(env, "RANK")
        world = _int(env, "WORLD_SIZE") if "WORLD_SIZE" in env else 1
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
    elif "SLURM_PROCID" in env:
        source, rank = "slurm", _int(env, "SLURM_PROCID")
        world = _int(env, "SLURM_NTASKS") if "SLURM_NTASKS" in env else 1
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
    elif "JOB_COMPLETION_INDEX" in env:
        source, rank = "kubernetes", _int(env, "JOB_COMPLETION_INDEX")
        world = _int(env, "WORLD_SIZE") if "WORLD_SIZE" in env else 1
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
    else:
        source, rank, world, local = "single", 0, 1, 0
    if not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is outside the world of {world} ({source} variables)")
    addr = env.get("MASTER_ADDR")
    if addr is None and source == "slurm" and env.get("SLURM_JOB_NODELIST"):
        addr = first_host(env["SLURM_JOB_NODELIST"])
    if addr is None:
        if world > 1:
            hint = {
                "slurm": "SLURM_JOB_NODELIST (or MASTER_ADDR)",
                "kubernetes": "MASTER_ADDR (the headless Service of index 0)",
            }.get(source, "MASTER_ADDR")
            raise ConfigError(
                f"{world} ranks but no master address: set {hint}; rank {rank} would otherwise "
                "wait for a master on 127.0.0.1"
            )
        addr = "127.0.0.1"
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    elif source == "slurm" and "SLURM_JOB_ID" in env:
        port = 15000 + _int(env, "SLURM_JOB_ID") % 20000  # the same on every node of the job
    elif world == 1:
        port = _free_port()
    else:
        raise ConfigError(f"{world} ranks but MASTER_PORT is not set ({source} variables)")
    return Rendezvous(rank, world, local, addr, port, source)


def trains_on_gpu(backend: str) -> bool:
    """Whether ranks started with ``backend`` train on GPUs: exactly when it resolves to nccl
    (:func:`init_from_env`). Launchers ask before any rank starts (the core budget)."""
    return resolve_backend(backend) == "nccl"


def init_from_env(backend: str = "auto", timeout_s: float = 300.0) -> DistContext:
    """Join the process group the engine's environment describes (:func:`rendezvous_from_env`)."""
    rv = rendezvous_from_env()
    rank, world, local_rank = rv.rank, rv.world_size, rv.local_rank
    # env:// reads these; written back so every engine's variables end up in one convention
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(local_rank),
        MASTER_ADDR=rv.master_addr,
        MASTER_PORT=str(rv.master_port),
    )
    chosen = resolve_backend(backend)
    if chosen == "nccl":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(
        chosen,
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
        device_id=device if chosen == "nccl" else None,
    )
    return DistContext(rank, world, local_rank, chosen, device)


def shutdown() -> None:
    """Leave the group together (a barrier), then destroy it."""
    if dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
