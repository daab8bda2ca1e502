"""A real Slurm on this machine for the slurm engine's tests: munged, slurmctld and two
``slurmd -N`` daemons emulating nodes ``node1`` and ``node2`` (Debian's build supports several
slurmd on one host), configured by a generated slurm.conf in a scratch directory.

Exactly the recipe measured in ../shared/reference/CLUSTERS.md §3: no systemd, no cgroups
(proctrack/linuxproc, task/none), no accounting daemon — job completion records go to a
``jobcomp/filetxt`` log, which is where the engine reads final states from. Clients find the
cluster through ``SLURM_CONF``; the system's /etc/slurm is never touched. Daemons are stopped by
the pid in their pid files (SIGTERM, then waiting until each is gone), never by name.

Needs root (slurmd runs jobs as their submitter, munged runs as the ``munge`` user) and the
``slurm-wlm`` and ``munge`` packages (``.ci/system-deps`` installs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODES = ("node1", "node2")
PARTITION = "multi"
MUNGE_RUN = Path("/run/munge")
#: set to 1 to skip the real-Slurm tests on a machine that cannot run Slurm (a developer's laptop);
#: CI never sets it, so there a missing Slurm fails the tests instead of hiding them
OPT_OUT = "MLBENCH_SKIP_SLURM"


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here; the message says what is missing and how to get it."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slurm_conf(root: Path, host: str, ports: dict[str, int]) -> str:
    """Every line of the reference configuration, with this machine's host name, the scratch
    directory and free ports (a developer's own Slurm on the usual ports is left alone)."""
    lines = [
        "ClusterName=mlbenchtest",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        f"SlurmctldPort={ports['ctld']}",
        f"SlurmdPort={ports['d']}",
        "AuthType=auth/munge",
        "MpiDefault=none",
        "ReturnToService=2",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool/%n",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd-%n.pid",
        f"SlurmctldLogFile={root}/slurmctld.log",
        f"SlurmdLogFile={root}/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root}/jobcomp.log",
    ]
    for node in NODES:
        lines.append(
            f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={ports[node]} "
            "CPUs=1 RealMemory=1000"
        )
    lines.append(
        f"PartitionName={PARTITION} Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP"
    )
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30, check=False)


def _munge_works() -> bool:
    try:
        enc = subprocess.run(["munge", "-n"], capture_output=True, timeout=5, check=False)
        if enc.returncode != 0:
            return False
        dec = subprocess.run(["unmunge"], input=enc.stdout, capture_output=True, timeout=5)
        return dec.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM one daemon by pid and wait until it is gone (SIGKILL after ``timeout``)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class SlurmCluster:
    """A two-node Slurm in ``root``. ``start()`` raises :class:`SlurmUnavailable` with the
    reason; ``stop()`` stops exactly the daemons it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.jobcomp = root / "jobcomp.log"
        self._pidfiles: list[Path] = []
        self._munged_pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self) -> None:
        missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(b)]
        if missing:
            raise SlurmUnavailable(
                f"Slurm is not installed ({', '.join(missing)} not on PATH): run .ci/system-deps "
                f"(apt-get install slurm-wlm munge), or set {OPT_OUT}=1 to skip these tests"
            )
        if os.geteuid() != 0:
            raise SlurmUnavailable(
                f"the Slurm test cluster needs root (slurmd, munged as munge); "
                f"run the tests as root or set {OPT_OUT}=1 to skip them"
            )
        self._start_munge()
        host = socket.gethostname()
        ports = {"ctld": _free_port(), "d": _free_port(), **{n: _free_port() for n in NODES}}
        for sub in ("state", *(f"spool/{n}" for n in NODES)):  # slurmd needs its spool dirs
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(slurm_conf(self.root, host, ports))
        self._daemon(["slurmctld", "-f", str(self.conf)], self.root / "slurmctld.pid")
        for node in NODES:
            self._daemon(
                ["slurmd", "-f", str(self.conf), "-N", node], self.root / f"slurmd-{node}.pid"
            )
        self._wait_idle()

    def _start_munge(self) -> None:
        if _munge_works():  # the machine's own munged: use it, and leave it running
            return
        if not Path("/etc/munge/munge.key").exists():
            res = _run(["runuser", "-u", "munge", "--", "mungekey", "--create"])
            if res.returncode != 0:
                raise SlurmUnavailable(f"cannot create the munge key: {res.stderr.strip()}")
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        res = _run(["runuser", "-u", "munge", "--", "munged"])
        if res.returncode != 0:
            raise SlurmUnavailable(f"munged did not start: {(res.stderr or res.stdout).strip()}")
        self._munged_pid = _read_pid(MUNGE_RUN / "munged.pid")
        deadline = time.monotonic() + 10
        while not _munge_works():
            if time.monotonic() > deadline:
                raise SlurmUnavailable("munged started but `munge -n | unmunge` fails")
            time.sleep(0.05)

    def _daemon(self, cmd: list[str], pidfile: Path) -> None:
        res = _run(cmd, env=self.env)
        if res.returncode != 0:
            raise SlurmUnavailable(
                f"{cmd[0]} did not start ({res.returncode}): {(res.stderr or res.stdout).strip()}"
                f"; see the logs in {self.root}"
            )
        self._pidfiles.append(pidfile)
        deadline = time.monotonic() + 10
        while _read_pid(pidfile) is None:
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"{cmd[0]} wrote no pid file {pidfile}; logs in {self.root}")
            time.sleep(0.02)

    def _wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        states = ""
        while time.monotonic() < deadline:
            res = _run(["sinfo", "-h", "-N", "-o", "%N %T"], env=self.env)
            states = res.stdout.strip()
            if res.returncode == 0 and states.count("idle") == len(NODES):
                return
            time.sleep(0.1)
        raise SlurmUnavailable(
            f"the emulated nodes never became idle ({states!r}); logs in {self.root}"
        )

    def stop(self) -> None:
        """Stop the daemons this cluster started, by pid, slurmds first."""
        for pidfile in reversed(self._pidfiles):
            pid = _read_pid(pidfile)
            if pid is not None:
                _stop_pid(pid)
        self._pidfiles.clear()
        if self._munged_pid is not None:
            _stop_pid(self._munged_pid)
            self._munged_pid = None

    def jobs(self) -> str:
        """squeue's view (for assertion messages)."""
        return _run(["squeue", "-h", "-o", "%i %T %R"], env=self.env).stdout
