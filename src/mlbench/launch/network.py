"""``--network``: the network between local ranks as a controlled variable (docs/network.md).

Each local rank runs in its own network namespace with one interface, ``eth0``, the end of a
veth pair whose other end is a port of a bridge. The bridge lives in a namespace of its own,
not in the root namespace: nothing of a run (interfaces, addresses, forwarding, firewall
interplay) touches the host's network, interface names cannot collide between concurrent runs
(each run's names are local to its namespaces), and deleting the run's namespaces removes every
veth, the bridge and every qdisc at once — cleanup is one operation per namespace.

Shaping is a token bucket (``tbf``) with a *small* burst (``burst_bytes``: 2 ms at the rate, at
least 16 KiB) and a short queue (5 ms at the rate) on both ends of every veth: the rank's
``eth0`` egress shapes what the rank sends, the bridge port's egress what it receives (each rank
has a full-duplex link of the requested rate, as a NIC would). A large burst would let the
first hundreds of MB through unshaped (../shared/reference/CLUSTERS.md §1.4). tbf splits a
segmentation-offload (GSO) packet larger than its burst and charges every byte either way, so
the rate holds with offload on; with ``loss`` offload is turned off (``gso_max_segs 1``) so the
filter drops wire packets, not 64 KB super-packets — which caps a link at ~350 Mbit/s on this
2-CPU machine (docs/network.md).

Loss needs no netem: under the rank's ``tbf`` sits an ``htb`` whose unclassified packets go out
through its direct queue, and a classic-BPF ``bpf`` filter (``ld rand``, the kernel's random
ancillary load) sends a fraction ``loss`` of them to a class whose ``pfifo`` has ``limit 0`` —
they are dropped. Only the rank's egress drops, so the loss between two ranks is ``loss`` per
direction. Delay is not implemented: this kernel has neither netem nor the ``fq``/``etf``
qdiscs an earliest-departure-time program would need, so ``latency=`` is refused
(:func:`parse_spec`) rather than claimed.

Without root, or without ``ip``/``tc``, :func:`preflight` refuses in one line before anything
exists. Names are ``mlb-<owner pid>-<run id>-{br,w<rank>}``: :func:`sweep_stale` deletes the
namespaces of owners that are gone (an earlier ``mlbench run`` killed with SIGKILL), and every
live owner removes its own on every way out (:meth:`Network.teardown`, also from ``atexit``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from mlbench.errors import ConfigError, MlbenchError

PREFIX = "mlb-"
SUBNET = "10.213.0.0/16"
#: requested vs measured bandwidth may differ by this fraction before a run is flagged: tbf
#: counts Ethernet/IP/TCP headers (~4.4 % of a 1500-byte packet) and gloo adds its own framing
#: and reduction time, so a correctly shaped link measures 3-10 % below the rate
TOLERANCE = 0.15
MIN_BURST = 16 * 1024
BURST_SECONDS = 0.002
QUEUE_LATENCY = "5ms"
DROP_CLASSID = 0x20020  # 2:20, the class whose pfifo has limit 0
_UNITS = {
    "": 1,
    "bit": 1,
    "kbit": 1e3,
    "mbit": 1e6,
    "gbit": 1e9,
    "tbit": 1e12,
    "bps": 8,
    "kbps": 8e3,
    "mbps": 8e6,
    "gbps": 8e9,
}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


class NetworkError(MlbenchError):
    """The network of a run cannot be set up here (no root, no ``ip``/``tc``, a kernel without
    what the request needs) or was given for an engine that cannot apply it."""


@dataclass(frozen=True)
class NetworkSpec:
    """What ``--network`` asked for: the rate in bits/s, the loss fraction."""

    bandwidth_bps: float
    loss: float = 0.0
    text: str = ""

    def requested(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bandwidth_bps": self.bandwidth_bps}
        if self.loss:
            out["loss"] = self.loss
        return out

    def burst_bytes(self) -> int:
        """The bucket's depth: 2 ms at the rate (what a timer tick needs at high rates), at least
        16 KiB (a few full packets); small enough that no run sees an unshaped start."""
        return max(MIN_BURST, int(self.bandwidth_bps / 8 * BURST_SECONDS))


def parse_rate(text: str) -> float:
    """``50mbit`` / ``1gbit`` / ``10Gbit`` / ``125mbps`` (bytes) → bits/s; tc's spelling."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise ConfigError(
            f"--network bandwidth={text!r} is not a rate; write e.g. 50mbit, 1gbit, 125mbps"
        )
    value = float(m.group(1)) * _UNITS[unit]
    if value < 8000:
        raise ConfigError(f"--network bandwidth={text!r} is below 8 kbit/s; tc cannot shape it")
    return value


def parse_spec(text: str) -> NetworkSpec:
    """``bandwidth=RATE[,latency=DELAY][,loss=P]`` → the spec, or one line saying what is wrong.

    ``latency`` is refused on this host (no netem, no fq/etf for an EDT program): a run that
    asked for a delay and got none would be a wrong measurement, not a degraded one."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ConfigError(
                f"--network {text!r}: {part!r} must look like KEY=VALUE "
                "(bandwidth=RATE[,latency=DELAY][,loss=P])"
            )
        if key not in ("bandwidth", "latency", "loss"):
            raise ConfigError(
                f"--network {text!r}: unknown key {key!r} (known: bandwidth, latency, loss)"
            )
        if key in fields:
            raise ConfigError(f"--network {text!r}: {key} is given twice")
        fields[key] = value.strip()
    if "bandwidth" not in fields:
        raise ConfigError(f"--network {text!r}: bandwidth=RATE is required (e.g. bandwidth=50mbit)")
    rate = parse_rate(fields["bandwidth"])
    if "latency" in fields:
        _parse_delay(fields["latency"])  # a malformed value is reported as such first
        raise NetworkError(
            f"--network latency={fields['latency']}: this host cannot apply a delay (its kernel "
            "has no netem and no fq/etf qdisc); only bandwidth and loss are shaped here "
            "(docs/network.md)"
        )
    loss = 0.0
    if "loss" in fields:
        try:
            loss = float(fields["loss"].rstrip("%")) / (100 if fields["loss"].endswith("%") else 1)
        except ValueError:
            raise ConfigError(
                f"--network loss={fields['loss']!r} is not a fraction (0.01 or 1%)"
            ) from None
        if not 0 <= loss < 1:
            raise ConfigError(f"--network loss={fields['loss']!r} must be in [0, 1)")
    return NetworkSpec(rate, loss, text)


def _parse_delay(text: str) -> float:
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)(s|ms|us)", text.strip())
    if not m:
        raise ConfigError(f"--network latency={text!r} is not a delay; write e.g. 10ms")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


# ---------------------------------------------------------------------------- the host
def preflight(
    *, euid: int | None = None, which: Any = shutil.which, workers: int = 1
) -> dict[str, str]:
    """The paths of ``ip`` and ``tc``, or one line naming what is missing; nothing is created.
    ``euid``/``which`` exist so a test can play an unprivileged user or a bare PATH."""
    uid = os.geteuid() if euid is None else euid
    if uid != 0:
        raise NetworkError(
            "--network needs root (it creates network namespaces and tc qdiscs); "
            f"this process runs as uid {uid}"
        )
    tools = {}
    for tool in ("ip", "tc"):
        path = which(tool)
        if not path:
            raise NetworkError(f"--network needs `{tool}` (package iproute2); it is not on PATH")
        tools[tool] = path
    if workers > 60000:
        raise NetworkError(f"--network supports at most 60000 workers, got {workers}")
    return tools


def rank_address(rank: int) -> str:
    """Rank ``r``'s address in the run's private subnet (10.213.0.0/16)."""
    n = rank + 1
    return f"10.213.{n // 256}.{n % 256}"


def namespaces(tools: dict[str, str] | None = None) -> list[str]:
    """Every network namespace name on the host (``ip netns list``)."""
    ip = (tools or {}).get("ip", "ip")
    out = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(tools: dict[str, str] | None = None) -> list[str]:
    """Delete the namespaces of runs whose owner process is gone; the names deleted."""
    ip = (tools or {}).get("ip", "ip")
    gone = []
    for name in namespaces(tools):
        m = re.match(rf"{PREFIX}(\d+)-", name)
        if m and not _pid_alive(int(m.group(1))):
            subprocess.run([ip, "netns", "delete", name], capture_output=True, check=False)
            gone.append(name)
    return gone


@dataclass
class Network:
    """One run's namespaces: built by :meth:`setup`, removed by :meth:`teardown` (idempotent)."""

    spec: NetworkSpec
    run_id: str
    workers: int
    tools: dict[str, str]
    owner: int = field(default_factory=os.getpid)
    created: list[str] = field(default_factory=list, init=False)

    @property
    def base(self) -> str:
        return f"{PREFIX}{self.owner}-{self.run_id}"

    @property
    def bridge_ns(self) -> str:
        return f"{self.base}-br"

    def rank_ns(self, rank: int) -> str:
        return f"{self.base}-w{rank}"

    def prefix(self, rank: int) -> list[str]:
        """The command prefix that starts rank ``rank`` inside its namespace. ``ip netns exec``
        execs the command in place (no fork), so the rank's pid, process group and parent-death
        signal are those the node agent gave it."""
        return [self.tools["ip"], "netns", "exec", self.rank_ns(rank)]

    def env(self) -> dict[str, str]:
        """Gloo picks its interface from the hostname, which resolves to nothing inside a
        namespace: name the interface."""
        return {"GLOO_SOCKET_IFNAME": "eth0"}

    @property
    def master_addr(self) -> str:
        return rank_address(0)

    def _ip(self, *args: str) -> None:
        self._run([self.tools["ip"], *args])

    def _tc(self, ns: str, *args: str) -> None:
        self._run([self.tools["tc"], "-n", ns, *args])

    @staticmethod
    def _run(cmd: list[str]) -> None:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            msg = (out.stderr or out.stdout).strip().splitlines()
            raise NetworkError(
                f"network setup failed: `{' '.join(cmd)}`: {msg[-1] if msg else out.returncode}"
            )

    def setup(self) -> None:
        """Sweep dead runs' leftovers, then build the bridge, one namespace + veth per rank,
        addresses and qdiscs. On any failure everything built so far is removed."""
        sweep_stale(self.tools)
        atexit.register(self.teardown)
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise

    def _build(self) -> None:
        br = self.bridge_ns
        self._add_ns(br)
        self._ip("-n", br, "link", "add", "br0", "type", "bridge")
        self._ip("-n", br, "link", "set", "lo", "up")
        self._ip("-n", br, "link", "set", "br0", "up")
        for rank in range(self.workers):
            ns, port = self.rank_ns(rank), f"v{rank}"
            self._add_ns(ns)
            self._ip("-n", br, "link", "add", port, "type", "veth", "peer", "eth0", "netns", ns)
            self._ip("-n", br, "link", "set", port, "master", "br0", "up")
            self._ip("-n", ns, "link", "set", "lo", "up")
            self._ip("-n", ns, "link", "set", "eth0", "up")
            if self.spec.loss > 0:  # one random draw per wire packet, not per GSO packet
                self._ip("-n", br, "link", "set", port, "gso_max_segs", "1")
                self._ip("-n", ns, "link", "set", "eth0", "gso_max_segs", "1")
            self._ip("-n", ns, "addr", "add", f"{rank_address(rank)}/16", "dev", "eth0")
            self._shape(ns, "eth0", loss=self.spec.loss)  # what the rank sends
            self._shape(br, port, loss=0.0)  # what the rank receives

    def _add_ns(self, name: str) -> None:
        self._ip("netns", "add", name)
        self.created.append(name)

    def _shape(self, ns: str, dev: str, *, loss: float) -> None:
        rate = f"{int(self.spec.bandwidth_bps)}bit"
        burst = str(self.spec.burst_bytes())
        self._tc(ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", rate,
                 "burst", burst, "latency", QUEUE_LATENCY)  # fmt: skip
        if loss <= 0:
            return
        # under the bucket: an htb whose unclassified packets leave by its direct queue, and a
        # class whose pfifo holds nothing, for the fraction the random classic-BPF filter picks
        self._tc(ns, "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "2:", "htb")
        self._tc(ns, "class", "add", "dev", dev, "parent", "2:", "classid", "2:20", "htb",
                 "rate", rate)  # fmt: skip
        self._tc(ns, "qdisc", "add", "dev", dev, "parent", "2:20", "handle", "3:", "pfifo",
                 "limit", "0")  # fmt: skip
        self._tc(ns, "filter", "add", "dev", dev, "parent", "2:", "bpf", "bytecode",
                 loss_bytecode(loss))  # fmt: skip

    def teardown(self) -> None:
        """Delete every namespace this run created (their veths, bridge and qdiscs go with
        them). Safe to call twice, and from ``atexit``."""
        ip = self.tools.get("ip", "ip")
        for name in reversed(self.created):
            with contextlib.suppress(OSError):
                subprocess.run([ip, "netns", "delete", name], capture_output=True, check=False)
        self.created.clear()
        with contextlib.suppress(Exception):
            atexit.unregister(self.teardown)

    def qdiscs(self) -> dict[str, str]:
        """``tc -s qdisc`` of every shaped device (for the record and the tests)."""
        out = {}
        for ns, dev in [(self.rank_ns(r), "eth0") for r in range(self.workers)] + [
            (self.bridge_ns, f"v{r}") for r in range(self.workers)
        ]:
            res = subprocess.run(
                [self.tools["tc"], "-n", ns, "-s", "qdisc", "show", "dev", dev],
                capture_output=True,
                text=True,
                check=False,
            )
            out[f"{ns}/{dev}"] = res.stdout
        return out


def loss_bytecode(loss: float) -> str:
    """Classic BPF for ``tc filter ... bpf bytecode``: ``A = random u32; if A >= loss·2³² → no
    match (0), else → class 2:20`` (whose pfifo drops it). ``ld rand`` is the ancillary load
    SKF_AD_OFF + SKF_AD_RANDOM (-4096 + 56)."""
    threshold = min(int(loss * 2**32), 2**32 - 1)
    ld_rand = f"32 0 0 {(-4096 + 56) & 0xFFFFFFFF}"  # BPF_LD|BPF_W|BPF_ABS
    jge = f"53 0 1 {threshold}"  # BPF_JMP|BPF_JGE|BPF_K: true → next, false → skip one
    return f"4,{ld_rand},{jge},6 0 0 0,6 0 0 {DROP_CLASSID}"


# ---------------------------------------------------------------------------- the record
def record(spec: NetworkSpec, measured: dict[str, Any] | None) -> dict[str, Any]:
    """result.json's ``network``: requested vs measured, and whether they agree."""
    out: dict[str, Any] = {
        "requested": spec.requested(),
        "spec": spec.text,
        "shaping": {
            "qdisc": "tbf",
            "burst_bytes": spec.burst_bytes(),
            "directions": ["rank egress (eth0)", "rank ingress (bridge port egress)"],
            "latency_applied": False,
        },
        "tolerance": TOLERANCE,
    }
    if not measured or not measured.get("bandwidth_bps"):
        out["measured"] = None
        out["within_tolerance"] = False
        out["flag"] = "the network was not measured (the run ended before its probe)"
        return out
    out["measured"] = measured
    bw = float(measured["bandwidth_bps"])
    off = abs(bw - spec.bandwidth_bps) / spec.bandwidth_bps
    out["within_tolerance"] = off <= TOLERANCE
    if not out["within_tolerance"]:
        out["flag"] = (
            f"measured bandwidth {format_rate(bw)} differs from the requested "
            f"{format_rate(spec.bandwidth_bps)} by {off:.0%} (tolerance {TOLERANCE:.0%})"
        )
    return out


def format_rate(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"
