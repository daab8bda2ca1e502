"""The environment record stored in every result: enough to reproduce or explain a number."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("mlbench", "torch", "numpy", "scikit-learn", "rich", "psutil")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    """``git -C <this source tree> ARGS`` output, stripped; None outside a checkout or when git
    is missing or slow (an installed package has no tree to ask)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit_time() -> str | None:
    """When the checkout's commit was made (ISO 8601): ``mlbench history`` orders versions by it
    (a run of older code made later still belongs before newer code)."""
    return _git("show", "-s", "--format=%cI", "HEAD") or None


def _git_commit() -> str | None:
    """Commit of the mlbench source tree, when it is a git checkout (editable installs); None
    for an installed package, whose version (``packages.mlbench``) then names the code."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return commit + ("-dirty" if dirty else "")


def collect(seed: int | None = None) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    record: dict[str, Any] = {
        "python": platform.python_version(),
        "packages": versions,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "git_commit": _git_commit(),
        "git_commit_time": _git_commit_time(),
        "seed": seed,
    }
    try:
        import torch

        record["torch"] = torch.__version__
        record["torch_threads"] = torch.get_num_threads()
        record["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            record["gpu_model"] = torch.cuda.get_device_name(0)
            record["gpu_count"] = torch.cuda.device_count()
            nccl = torch.cuda.nccl.version()
            record["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        else:
            record["gpu_model"] = None
            record["gpu_count"] = 0
    except ImportError:
        record["torch"] = None
    return record
