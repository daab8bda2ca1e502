"""Golden loss curves: a deterministic tiny run per training task and scheme family on 2 gloo
ranks, its per-step losses compared to the committed reference.

Why: refactors of the loop, the task contract or a scheme must not change the numbers a benchmark
produces. An equivalence test proves a scheme is *right*; this proves a change kept it *the same*.
Every rank's per-step training loss (``train.log_every_steps=1``), the final validation metrics
and the bytes each rank sent are pinned. The tolerance (relative 2e-5) absorbs the last-bit
differences between CPUs' vector units, and nothing more: a changed lr warm-up, loss term, seed
use or reduction order moves these numbers by 1e-4 or far more (docs/timing.md, "golden curves").

Regenerate deliberately, and say why in the commit: ``MLBENCH_UPDATE_GOLDEN=1 pytest tests/golden``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from mlbench.dist import DistContext
from mlbench.testing import run_ranks

HERE = Path(__file__).parent
RTOL = 2e-5
STEPS = 6

TINY = {
    "cifar10-resnet20": [
        "data.batch_size=8",
        "data.train_samples=64",
        "data.val_samples=32",
    ],  # 4 steps an epoch on 2 ranks: the spec's log2(k)-epoch warm-up spans steps 1-4
    "epsilon-logreg": ["data.dataset=a9a", "data.train_samples=800", "data.val_samples=200"],
    # the real 33,278-word vocabulary, a tiny LSTM (as tests/dist/test_conformance.py): 8 columns
    # of 500 rows, random windows around 10 (the lr factor seq_len/10 varies from step to step)
    "wikitext2-lstm": [
        "model.embedding_size=8",
        "model.hidden_size=8",
        "data.batch_size=4",
        "data.bptt=10",
        "data.train_samples=4000",
        "data.val_samples=400",
    ],
    # tiny models on Multi30k prepared as the WMT recipes (tests/conftest.py): accumulation 2
    # on 2 ranks, global normalisation, clipping (4a), a 4-sentence BLEU by beam search
    "wmt16-gnmt": [
        "model.hidden_size=8",
        "model.layers=2",
        "data.global_batch=32",
        "data.batch_size=8",
        "data.train_samples=640",
        "data.val_samples=4",
        "decode.max_len=6",
    ],
    "wmt17-transformer": [
        "model.d_model=8",
        "model.ffn_size=16",
        "model.heads=2",
        "model.encoder_layers=1",
        "model.decoder_layers=1",
        "data.global_tokens=1024",
        "data.batch_size=256",
        "data.train_samples=640",
        "data.val_samples=4",
        "decode.max_len_extra=2",
    ],
}
#: one run per scheme family (name, extra overrides); the id names the golden file
FAMILIES: dict[str, list[str]] = {
    "allreduce": ["algorithm.name=allreduce"],
    "allreduce-overlap": ["algorithm.name=allreduce", "algorithm.overlap=true"],
    "adam": ["algorithm.name=adam"],
    "ddp": ["algorithm.name=ddp"],
    "ddp-powersgd": ["algorithm.name=ddp", "algorithm.ddp_hook=powersgd", "algorithm.start_iter=2"],
    "powersgd": ["algorithm.name=powersgd"],
    "gossip": ["algorithm.name=gossip"],
    "topk": ["algorithm.name=topk", "algorithm.fraction=0.05"],
    "randomk": ["algorithm.name=randomk", "algorithm.fraction=0.05"],
    "signsgd": ["algorithm.name=signsgd"],
    "signsgd-majority": ["algorithm.name=signsgd", "algorithm.sign_variant=majority"],
    "localsgd": ["algorithm.name=localsgd", "algorithm.local_steps=2"],
    "allreduce-fp16": ["algorithm.name=allreduce", "train.precision=fp16"],
}
#: the families each task runs: every family on 1a and 2a; on 3a (a dense 33k×8 embedding: each
#: family reads the corpus and runs its own tokenizer pass) the dense path, fp16, and a forced
#: NT-ASGD switch after step 2, so that steps 3-6 update the running mean and the final
#: evaluation runs on the averaged weights
TASK_FAMILIES: dict[str, dict[str, list[str]]] = {
    "cifar10-resnet20": FAMILIES,
    "epsilon-logreg": FAMILIES,
    "wikitext2-lstm": {
        "allreduce": FAMILIES["allreduce"],
        "allreduce-fp16": FAMILIES["allreduce-fp16"],
        "ntasgd": [
            "algorithm.name=allreduce",
            "train.eval_every_steps=2",
            "optim.switch_at_eval=1",
        ],
    },
    # 4a/4b: the dense path in fp32, and the spec's fp16 (4a's schedule counts applied updates)
    "wmt16-gnmt": {
        "allreduce": [*FAMILIES["allreduce"], "train.precision=fp32"],
        "allreduce-fp16": FAMILIES["allreduce-fp16"],
    },
    "wmt17-transformer": {
        "allreduce": [*FAMILIES["allreduce"], "train.precision=fp32"],
        "allreduce-fp16": FAMILIES["allreduce-fp16"],
    },
}
assert set(TASK_FAMILIES) == set(TINY)
#: (task, family) pairs; the golden file is ``{task}-{family}.json``
CASES = [(task, family) for task, families in TASK_FAMILIES.items() for family in families]


def _one(ctx: DistContext, task_name: str, extra: list[str], data: str, out: Path) -> dict:
    from mlbench.registry import get_algorithm
    from mlbench.runs import resolve_config
    from mlbench.telemetry.events import EventWriter, read_events
    from mlbench.train.loop import train

    overrides = [
        f"data.dir={data}",
        f"train.max_steps={STEPS}",
        "train.log_every_steps=1",
        "train.log_every_seconds=0",
        "train.resource_every_seconds=0",
        *TINY[task_name],
        *extra,
    ]
    task, cfg = resolve_config(task_name, overrides=overrides)
    run_dir = out / f"{task_name}-{len(list(out.iterdir()))}"
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"rank-{ctx.rank}.jsonl"
    events = EventWriter(path, run_dir.name, ctx.rank)
    try:
        summary = asdict(train(task, cfg, ctx, events, run_dir, get_algorithm(cfg.algorithm.name)))
    finally:
        events.close()
    losses = [e["value"] for e in read_events(path) if e["kind"] == "train" and e["name"] == "loss"]
    return {
        "losses": losses,
        "final_metrics": summary["final_metrics"],
        "bytes_sent": summary["bytes_sent"],
        "steps": summary["steps"],
    }


def _all(ctx: DistContext, data: str, out: str) -> dict[str, dict]:
    """Every (task, family) in the same two processes: a spawn per run would cost ~4 s each."""
    import torch

    torch.use_deterministic_algorithms(True)
    results = {}
    for task_name, family in CASES:
        extra = TASK_FAMILIES[task_name][family]
        results[f"{task_name}-{family}"] = _one(ctx, task_name, extra, data, Path(out))
    return results


@pytest.fixture(scope="module")
def curves(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("golden")
    ranks = run_ranks(_all, 2, str(real_data), str(out), timeout=600)
    return {key: [r[key] for r in ranks] for key in ranks[0]}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-9)


def _diff(got: list[dict], want: list[dict]) -> list[str]:
    problems = []
    for rank, (g, w) in enumerate(zip(got, want, strict=True)):
        if g["steps"] != w["steps"] or len(g["losses"]) != len(w["losses"]):
            problems.append(f"rank {rank}: {g['steps']} steps, want {w['steps']}")
            continue
        for step, (a, b) in enumerate(zip(g["losses"], w["losses"], strict=True)):
            if not _close(a, b):
                problems.append(f"rank {rank} step {step + 1}: loss {a!r}, golden {b!r}")
        for name, b in w["final_metrics"].items():
            a = g["final_metrics"].get(name, float("nan"))
            if not _close(a, b):
                problems.append(f"rank {rank}: final {name} {a!r}, golden {b!r}")
        if g["bytes_sent"] != w["bytes_sent"]:
            problems.append(f"rank {rank}: bytes_sent {g['bytes_sent']}, golden {w['bytes_sent']}")
    return problems


@pytest.mark.world_size(2)
@pytest.mark.parametrize(("task_name", "family"), CASES)
def test_golden_curve(curves: dict[str, list[dict]], task_name: str, family: str) -> None:
    key = f"{task_name}-{family}"
    got = curves[key]
    path = HERE / f"{key}.json"
    if os.environ.get("MLBENCH_UPDATE_GOLDEN"):
        path.write_text(json.dumps({"ranks": got}, indent=1) + "\n")
    assert path.exists(), f"no golden file {path.name}: run with MLBENCH_UPDATE_GOLDEN=1"
    want = json.loads(path.read_text())["ranks"]
    assert all(len(r["losses"]) == STEPS for r in got), "one loss per step expected"
    problems = _diff(got, want)
    assert not problems, f"{key} departs from its golden curve:\n" + "\n".join(problems[:20])
