"""Beam search: greedy at width 1, the exact GNMT scoring, length limits, EOS and determinism."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from mlbench.errors import ConfigError
from mlbench.models.beam import beam_search, beam_search_scored, coverage_penalty, length_penalty
from mlbench.models.gnmt import GNMT
from mlbench.models.transformer import Transformer

BOS, EOS, A, B = 2, 3, 4, 5
VOCAB = 8

#: (first source id, prefix generated so far) -> ({token: log-prob}, attention over the source)
Table = Callable[[int, tuple[int, ...]], tuple[dict[int, float], list[float]]]


class FixedModel:
    """A model with fixed log-probabilities per prefix (the decoding interface, nothing else):
    the state is the first source id and the tokens generated so far, per row."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.steps = 0

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> Any:
        return src[:, 0].clone(), torch.zeros(src.size(0), 0, dtype=torch.long)

    def decode_step(self, tokens: torch.Tensor, state: Any) -> Any:
        self.steps += 1
        first, hist = state
        hist = torch.cat([hist, tokens[:, None]], dim=1)
        lps, atts = [], []
        for f, h in zip(first.tolist(), hist.tolist(), strict=True):
            probs, att = self.table(f, tuple(h[1:]))
            row = torch.full((VOCAB,), -30.0)
            for tok, lp in probs.items():
                row[tok] = lp
            lps.append(row)
            atts.append(torch.tensor(att))
        return torch.stack(lps), (first, hist), torch.stack(atts)

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any:
        return state[0][index], state[1][index]


def search(model: Any, src: torch.Tensor, src_len: torch.Tensor, **kw: Any) -> Any:
    args = {"beam": 2, "max_len": 10, "len_alpha": 0.0, "coverage": 0.0} | kw
    return beam_search_scored(model, src, src_len, **args)


def one_source() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[7, 3, 0]]), torch.tensor([2])  # two real positions, one pad


def long_or_short(first: int, prefix: tuple[int, ...]) -> tuple[dict[int, float], list[float]]:
    """Short ``[]`` (EOS at once, logP −1.3) against long ``[A, A, A]`` (logP −1.5)."""
    table = {
        (): ({A: -0.3, EOS: -1.3}, [0.5, 0.5, 0.0]),
        (A,): ({A: -0.4}, [0.6, 0.1, 0.0]),
        (A, A): ({A: -0.4}, [0.3, 0.1, 0.0]),
        (A, A, A): ({EOS: -0.4}, [0.2, 0.1, 0.0]),
    }
    # after EOS (a finished hypothesis still rides along in the batch): its attention must not count
    return table.get(prefix, ({EOS: -1.0}, [0.4, 0.4, 0.4]))


def test_the_penalty_formulas() -> None:
    assert length_penalty(torch.tensor(4), 1.0).item() == pytest.approx(1.5)
    assert length_penalty(torch.tensor(7), 0.6).item() == pytest.approx(2.0**0.6)
    cov = torch.tensor([[1.6, 0.8, 0.0]])
    valid = torch.tensor([[True, True, False]])
    assert coverage_penalty(cov, valid, 0.1).item() == pytest.approx(0.1 * math.log(0.8))
    # an unattended real word costs log(1e-10), not -inf
    assert coverage_penalty(cov, torch.tensor([[True, True, True]]), 1.0).item() == pytest.approx(
        math.log(0.8) + math.log(1e-10)
    )


@pytest.mark.parametrize(
    ("alpha", "beta", "ids", "score"),
    [
        (0.0, 0.0, [], -1.3),  # raw log-probabilities: the short one
        (1.0, 0.0, [A, A, A], -1.5 / 1.5),  # lp(4) = (5+4)/6 = 1.5 lifts the long one
        # coverage: the short one attended 0.5+0.5, the long one 1.6 (capped at 1) and 0.8
        (0.0, 1.0, [A, A, A], -1.5 + math.log(0.8)),
        (0.0, 0.1, [], -1.3 + 0.1 * 2 * math.log(0.5)),
        (1.0, 0.1, [A, A, A], -1.0 + 0.1 * math.log(0.8)),
    ],
)
def test_scores_against_hand_computed_values(
    alpha: float, beta: float, ids: list[int], score: float
) -> None:
    src, src_len = one_source()
    [(found, value)] = search(
        FixedModel(long_or_short), src, src_len, len_alpha=alpha, coverage=beta
    )
    assert found == ids
    assert value == pytest.approx(score, abs=1e-6)


def garden_path(first: int, prefix: tuple[int, ...]) -> tuple[dict[int, float], list[float]]:
    """Greedy takes A (−0.5) and then pays −3 to go on; B (−0.9) goes on for −0.1. At step 2
    the two beams swap places, so step 3 only scores right if the state followed its
    hypothesis (``reorder_state``)."""
    table = {
        (): {A: -0.5, B: -0.9},
        (A,): {A: -3.0},
        (B,): {B: -0.1},
        (A, A): {EOS: -0.2},
        (B, B): {EOS: -0.3},
    }
    return table.get(prefix, {EOS: -5.0}), [1.0, 1.0, 0.0]


def test_a_wider_beam_finds_a_better_hypothesis_than_greedy() -> None:
    src, src_len = one_source()
    [(greedy, g)] = search(FixedModel(garden_path), src, src_len, beam=1)
    [(wide, w)] = search(FixedModel(garden_path), src, src_len, beam=2)
    assert (greedy, g) == ([A, A], pytest.approx(-3.7))
    assert (wide, w) == ([B, B], pytest.approx(-1.3))


def endless_or_short(first: int, prefix: tuple[int, ...]) -> tuple[dict[int, float], list[float]]:
    """Source 10 ends after two A's; any other source never emits EOS."""
    if first == 10 and len(prefix) == 2:
        return {EOS: -0.1}, [1.0, 1.0, 1.0]
    return {A: -0.1, B: -0.2, EOS: -9.0}, [1.0, 1.0, 1.0]


@pytest.mark.parametrize("beam", [1, 3])
def test_eos_ends_one_sentence_while_others_go_on_to_their_limit(beam: int) -> None:
    src = torch.tensor([[10, 3, 0], [11, 12, 3], [11, 3, 0]])
    src_len = torch.tensor([2, 3, 2])
    model = FixedModel(endless_or_short)
    out = beam_search(
        model, src, src_len, beam=beam, max_len=lambda n: n + 3, len_alpha=0.6, coverage=0.0
    )
    assert out == [[A, A], [A] * 6, [A] * 5]  # limits 2+3 and 3+3; no EOS in the output
    assert model.steps == 6
    out = beam_search(model, src, src_len, beam=beam, max_len=4, len_alpha=0.6, coverage=0.0)
    assert out == [[A, A], [A] * 4, [A] * 4]
    model.steps = 0
    out = beam_search(model, src[:1], src_len[:1], beam=beam, max_len=9, len_alpha=0.6, coverage=0)
    assert out == [[A, A]]
    assert model.steps == 3  # stops once every hypothesis has ended: A, A, EOS


def test_bad_arguments_are_refused() -> None:
    src, src_len = one_source()
    model = FixedModel(garden_path)
    with pytest.raises(ConfigError):
        search(model, src, src_len, beam=0)
    with pytest.raises(ConfigError):
        search(model, src, src_len, max_len=0)


def tiny_models() -> list[Any]:
    torch.manual_seed(0)
    gnmt = GNMT(30, hidden_size=16, layers=3, dropout=0.0, init=1.0).eval()  # outputs vary
    transformer = Transformer(
        30, d_model=16, ffn_size=32, heads=2, encoder_layers=2, decoder_layers=2
    ).eval()
    with torch.no_grad():  # make EOS likely enough that greedy lengths vary
        gnmt.classifier.bias[EOS] += 1.8
        transformer.embedding.weight[EOS] *= 3.0
    return [gnmt, transformer]


def sources() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([6, 2, 4, 5, 3, 6])
    src = torch.randint(4, 30, (6, 6), generator=g)
    for i, n in enumerate(lengths.tolist()):
        src[i, n - 1] = EOS
        src[i, n:] = 0
    return src, lengths


@torch.no_grad()
def naive_greedy(model: Any, src: torch.Tensor, src_len: torch.Tensor, limit: int) -> list[int]:
    """Argmax decoding with a full teacher-forced forward per step, one sentence at a time."""
    tgt = torch.tensor([[BOS]])
    for _ in range(limit):
        token = int(model(src, src_len, tgt)[0, -1].argmax())
        tgt = torch.cat([tgt, torch.tensor([[token]])], dim=1)
        if token == EOS:
            break
    ids = tgt[0, 1:].tolist()
    return ids[:-1] if ids and ids[-1] == EOS else ids


@pytest.mark.parametrize("which", [0, 1], ids=["gnmt", "transformer"])
def test_beam_one_is_greedy_decoding(which: int) -> None:
    model = tiny_models()[which]
    src, src_len = sources()
    out = beam_search(model, src, src_len, beam=1, max_len=8, len_alpha=0.6, coverage=0.0)
    expected = [
        naive_greedy(model, src[i : i + 1, : int(n)], src_len[i : i + 1], 8)
        for i, n in enumerate(src_len.tolist())
    ]
    assert out == expected
    assert len({len(x) for x in expected}) > 1  # EOS and the limit both ended some


@pytest.mark.parametrize("which", [0, 1], ids=["gnmt", "transformer"])
def test_deterministic_and_independent_of_the_batch(which: int) -> None:
    model = tiny_models()[which]
    src, src_len = sources()
    cov = 0.1 if which == 0 else 0.0
    kw: dict[str, Any] = {"beam": 4, "max_len": 12, "len_alpha": 0.6, "coverage": cov}
    first = beam_search_scored(model, src, src_len, **kw)
    assert beam_search_scored(model, src, src_len, **kw) == first
    for i, n in enumerate(src_len.tolist()):
        [(ids, score)] = beam_search_scored(model, src[i : i + 1, :n], src_len[i : i + 1], **kw)
        assert ids == first[i][0]
        assert score == pytest.approx(first[i][1], abs=1e-5)
        assert len(ids) <= 12 and EOS not in ids and BOS not in ids


@pytest.mark.parametrize("which", [0, 1], ids=["gnmt", "transformer"])
def test_the_returned_score_is_the_models_own_score_of_the_hypothesis(which: int) -> None:
    """Rescore each winner with a teacher-forced forward: equal only if every step decoded
    from its own hypothesis's state (reordering) and lengths and EOS were counted right."""
    model = tiny_models()[which]
    src, src_len = sources()
    limit = 7
    found = beam_search_scored(
        model, src, src_len, beam=4, max_len=limit, len_alpha=0.6, coverage=0
    )
    for i, (ids, score) in enumerate(found):
        ended = len(ids) < limit  # else it was cut at the limit, without EOS
        out = [*ids, EOS] if ended else ids
        tgt_in = torch.tensor([[BOS, *out[:-1]]])
        with torch.no_grad():
            lp = torch.log_softmax(model(src[i : i + 1], src_len[i : i + 1], tgt_in), dim=-1)
        log_p = float(lp[0, torch.arange(len(out)), torch.tensor(out)].sum())
        expected = log_p / ((5 + len(out)) / 6) ** 0.6
        assert score == pytest.approx(expected, abs=1e-5), i
