"""Batched, deterministic beam search over any model with the seq2seq decoding interface.

The model provides (see :mod:`mlbench.models.gnmt`, :mod:`mlbench.models.transformer`)::

    encode(src, src_len) -> state
    decode_step(tokens [N], state) -> (log_probs [N, V], state, attention [N, S] | None)
    reorder_state(state, index [N]) -> state

**Search.** Every sentence keeps ``beam`` hypotheses, all decoded in one batch of
``N = batch·beam`` rows. At each step every live hypothesis is extended by every token, scored by
its *raw* cumulative log-probability ``logP``; a finished hypothesis (it emitted EOS, or reached
its length limit) stays in the beam as a single candidate with its score frozen; the ``beam`` best
candidates per sentence survive (``torch.topk``: deterministic). The search stops when every
hypothesis of every sentence is finished or the longest limit is reached. This is MLPerf GNMT's
search: the penalties do not steer the pruning, they choose among the ``beam`` survivors.

**Final score** of a hypothesis that generated ``len`` tokens (EOS included; a hypothesis cut at
the length limit counts its ``len`` tokens and has no EOS)::

    score = logP / lp(len) + cp
    lp(len) = ((5 + len) / 6) ** len_alpha                                  (GNMT, Wu et al. 2016)
    cp = coverage · Σ_{real source positions i} log(min(Σ_t a_{t,i}, 1))

where ``a_{t,i}`` is the attention the model returned at step ``t`` of this hypothesis (EOS step
included), and ``min(·, 1)`` is floored at 1e-10 so a never-attended word costs a large finite
amount instead of ``-inf``. The hypothesis with the highest score wins; its ids are returned
without BOS/EOS. ``coverage = 0`` needs no attention (``decode_step`` may return None).

**Length limit.** ``max_len`` is the most tokens a hypothesis may generate, EOS included: an int,
or a callable of ``src_len`` giving one limit per sentence (4b: ``src_len + 50``). The search
does not switch the model's mode: call it in ``eval()`` mode (dropout off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from mlbench.errors import ConfigError

COVERAGE_FLOOR = 1e-10


class Seq2Seq(Protocol):
    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Any: ...

    def decode_step(
        self, tokens: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]: ...

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any: ...


MaxLen = int | Callable[[torch.Tensor], torch.Tensor]


def length_penalty(length: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's ``((5 + len) / 6) ** alpha``."""
    return ((5.0 + length.double()) / 6.0) ** alpha


def coverage_penalty(coverage: torch.Tensor, valid: torch.Tensor, beta: float) -> torch.Tensor:
    """GNMT's ``beta · Σ_i log(min(coverage_i, 1))`` over the real source positions ``valid``;
    ``coverage [..., S]`` is the attention summed over the decoding steps."""
    logs = coverage.double().clamp(min=COVERAGE_FLOOR, max=1.0).log()
    return beta * (logs * valid).sum(-1)


def _limits(max_len: MaxLen, src_len: torch.Tensor) -> torch.Tensor:
    limits = max_len(src_len) if callable(max_len) else torch.full_like(src_len, max_len)
    limits = torch.as_tensor(limits, dtype=torch.long).cpu()
    if limits.shape != src_len.shape or bool((limits < 1).any()):
        raise ConfigError(f"max_len must give one limit ≥ 1 per sentence, got {limits.tolist()}")
    return limits


@torch.no_grad()
def beam_search_scored(
    model: Seq2Seq,
    src: torch.Tensor,
    src_len: torch.Tensor,
    *,
    beam: int,
    max_len: MaxLen,
    len_alpha: float,
    coverage: float,
    bos: int = 2,
    eos: int = 3,
) -> list[tuple[list[int], float]]:
    """Per sentence: the best hypothesis's ids (no BOS/EOS) and its final score (module doc)."""
    if beam < 1:
        raise ConfigError(f"beam width must be ≥ 1, not {beam}")
    b, s = src.shape
    k = beam
    device = src.device
    limits = _limits(max_len, src_len).to(device)
    valid = torch.arange(s, device=device)[None, :] < src_len.to(device)[:, None]

    state = model.encode(src, src_len)
    state = model.reorder_state(state, torch.arange(b, device=device).repeat_interleave(k))
    tokens = torch.full((b * k,), bos, dtype=torch.long, device=device)
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished = torch.zeros(b, k, dtype=torch.bool, device=device)
    lengths = torch.zeros(b, k, dtype=torch.long, device=device)
    history = torch.zeros(b, k, 0, dtype=torch.long, device=device)
    cover = torch.zeros(b * k, s, device=device) if coverage else None
    rows = (torch.arange(b, device=device) * k)[:, None]

    for t in range(1, int(limits.max()) + 1):
        log_probs, state, attention = model.decode_step(tokens, state)
        v = log_probs.size(-1)
        extended = scores.unsqueeze(-1) + log_probs.view(b, k, v).to(scores.dtype)
        frozen = torch.full_like(extended, float("-inf"))
        frozen[..., 0] = scores  # a finished hypothesis: one candidate, score unchanged
        candidates = torch.where(finished.unsqueeze(-1), frozen, extended).view(b, k * v)
        scores, flat = candidates.topk(k, dim=1)
        parent, token = flat // v, flat % v
        index = (rows + parent).view(-1)
        was_finished = finished.gather(1, parent)
        if cover is not None:
            if attention is None:
                raise ConfigError("coverage penalty needs the model's attention (got None)")
            live = (~finished).view(-1, 1).to(attention.dtype)
            cover = (cover + attention.float() * live).index_select(0, index)
        lengths = lengths.gather(1, parent) + (~was_finished).long()
        finished = was_finished | (token == eos) | (t >= limits)[:, None]
        history = torch.cat([history.gather(1, parent.unsqueeze(-1).expand_as(history)),
                             token.unsqueeze(-1)], dim=-1)  # fmt: skip
        state = model.reorder_state(state, index)
        tokens = token.view(-1)
        if bool(finished.all()):
            break

    final = scores.double() / length_penalty(lengths, len_alpha)
    if cover is not None:
        final = final + coverage_penalty(cover.view(b, k, s), valid[:, None, :], coverage)
    best = final.argmax(dim=1)
    out: list[tuple[list[int], float]] = []
    for i in range(b):
        j = int(best[i])
        ids = history[i, j, : int(lengths[i, j])].tolist()
        if ids and ids[-1] == eos:
            ids.pop()
        out.append((ids, float(final[i, j])))
    return out


def beam_search(
    model: Seq2Seq,
    src: torch.Tensor,
    src_len: torch.Tensor,
    *,
    beam: int,
    max_len: MaxLen,
    len_alpha: float,
    coverage: float,
    bos: int = 2,
    eos: int = 3,
) -> list[list[int]]:
    """Per sentence the best hypothesis's ids, without BOS/EOS (scoring: module doc).
    ``beam=1`` is greedy decoding."""
    found = beam_search_scored(
        model,
        src,
        src_len,
        beam=beam,
        max_len=max_len,
        len_alpha=len_alpha,
        coverage=coverage,
        bos=bos,
        eos=eos,
    )
    return [ids for ids, _ in found]
