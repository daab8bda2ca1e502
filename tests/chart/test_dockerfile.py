"""docker/Dockerfile agrees with the chart and the Makefile. The image cannot be built here (no
Docker daemon), so this parses the instructions and checks what the chart relies on: the user's
UID (the chart's runAsUser), the port `mlbench serve` listens on, the entrypoint, and the torch
pin. checkov lints it in test_chart.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.chart.tools import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "a continuation line runs off the end of the file"
    return out


def _one(ins: list[tuple[str, str]], word: str, stage: int = -1) -> list[str]:
    """Arguments of every `word` instruction in the given build stage (default: the last)."""
    stages: list[list[tuple[str, str]]] = []
    for w, args in ins:
        if w == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((w, args))
    return [args for w, args in stages[stage] if w == word]


def _chart_helper(name: str) -> str:
    text = (REPO / "charts" / "mlbench" / "templates" / "_helpers.tpl").read_text()
    m = re.search(r'define "mlbench\.' + name + r'" -}}(\w+){{', text)
    assert m, f"mlbench.{name} not found in _helpers.tpl"
    return m.group(1)


def test_parses_and_every_instruction_is_known() -> None:
    known = {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "USER", "EXPOSE", "HEALTHCHECK"}
    known |= {"ENTRYPOINT", "CMD"}
    ins = instructions(DOCKERFILE)
    assert {w for w, _ in ins} <= known, {w for w, _ in ins} - known
    assert sum(w == "FROM" for w, _ in ins) == 2  # build stage, then the slim runtime


def test_user_is_the_charts_uid() -> None:
    uid = _chart_helper("uid")
    ins = instructions(DOCKERFILE)
    assert _one(ins, "USER") == [f"{uid}:{uid}"]  # numeric, so runAsNonRoot can verify it
    created = " ".join(_one(ins, "RUN"))
    assert f"--uid {uid}" in created and f"--gid {uid}" in created


def test_port_and_entrypoint() -> None:
    ins = instructions(DOCKERFILE)
    assert _one(ins, "EXPOSE") == [_chart_helper("containerPort")]
    assert _one(ins, "ENTRYPOINT") == ['["mlbench"]']


def test_torch_pin_is_the_makefiles() -> None:
    makefile = (REPO / "Makefile").read_text()
    spec = re.search(r"^TORCH_SPEC \?= (.+)$", makefile, re.M)
    assert spec, "TORCH_SPEC not found in the Makefile"
    (pin,) = [w for w in shlex.split(spec.group(1)) if w.startswith("torch==")]
    build_args = dict(a.split("=", 1) for a in _one(instructions(DOCKERFILE), "ARG", stage=0))
    assert f"torch=={build_args['TORCH_VERSION']}" == pin
    assert build_args["TORCH_INDEX"].endswith("/whl/cpu")  # CPU by default; CUDA by build arg


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    ignore = (REPO / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*"
    copied = {
        w.rstrip("/")
        for args in _one(instructions(DOCKERFILE), "COPY", stage=0)
        for w in args.split()[:-1]
    }
    assert {"!" + c + ("/" if c == "src" else "") for c in copied} <= set(ignore)
