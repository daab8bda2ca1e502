"""GNMT v2 (Wu et al. 2016, in MLPerf's "v2" form), the model of task 4a.

Shape at the reference size (hidden 1024, 4+4 layers, V = 32,320 → 160,671,297 parameters):

* one embedding ``V×H`` shared by the encoder and the decoder;
* encoder: a bidirectional LSTM ``H→H`` per direction (output ``2H``), an LSTM ``2H→H``, then
  LSTMs ``H→H`` with a residual connection around each (from the third layer on);
* decoder: LSTM 1 ``H→H`` whose output is the query of a *normalised* Bahdanau attention over
  the encoder output; the attention context is concatenated to the input of every later layer
  (``2H→H``), with residual connections from the third layer on;
* a classifier ``H→V`` with bias (not tied: MLPerf's GNMT ties only the two embeddings).

Normalised Bahdanau attention (MLPerf): ``score(q, k) = (g·v/‖v‖) · tanh(W_q q + W_k k + b)``
with ``g`` initialised to ``1/√units`` and ``b`` to zero; padded source positions get ``-inf``
before the softmax. The keys ``W_k k`` are projected once per sentence (in :meth:`GNMT.encode`)
and reused at every decoding step.

Dropout (0.2 at the reference) is applied to the input of every LSTM, never to the attention
context nor before the classifier — MLPerf's placement. Every parameter is initialised
``U(−0.1, 0.1)`` except the attention's ``g`` and ``b``.

Padding: the bidirectional layer runs on a packed sequence, so its backward direction starts at
each sentence's real last token; the later layers run left to right, so their outputs at real
positions never see the padding behind them, and the attention masks the padded keys. A
sentence's outputs therefore do not depend on what it is batched with.

Interface (shared with :mod:`mlbench.models.transformer`, used by :mod:`mlbench.models.beam`):
``forward(src, src_len, tgt_in) -> logits``, ``encode``, ``decode_step``, ``reorder_state``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mlbench.errors import ConfigError

PAD = 0

LSTMState = tuple[torch.Tensor, torch.Tensor]


class GNMTState(NamedTuple):
    """What the decoder needs between steps. Batch is dim 0 of ``memory``/``keys``/``mask`` and
    dim 1 of each ``(h, c)`` (``[1, N, H]``, one pair per decoder layer)."""

    hidden: tuple[LSTMState, ...]
    memory: torch.Tensor  # [N, S, H] encoder output (the attention's values)
    keys: torch.Tensor  # [N, S, U] encoder output through W_k, projected once
    mask: torch.Tensor  # [N, S] bool, True at real source positions


def _lstm(
    lstm: nn.Module, x: torch.Tensor | nn.utils.rnn.PackedSequence, state: LSTMState | None = None
) -> tuple[torch.Tensor, LSTMState]:
    """Run ``lstm``; under CPU fp16 autocast in fp32, because oneDNN has no fp16 LSTM on CPU
    (the same guard as :class:`mlbench.models.awd_lstm.WeightDropLSTM`)."""
    data = x.data if isinstance(x, nn.utils.rnn.PackedSequence) else x
    if (
        data.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.float16
    ):
        with torch.autocast("cpu", enabled=False):
            x = x.float()  # PackedSequence has .float() too
            if state is not None:
                state = (state[0].float(), state[1].float())
            out, new = lstm(x, state)
    else:
        out, new = lstm(x, state)
    return out, new


class NormalizedBahdanauAttention(nn.Module):
    """Additive attention with a weight-normalised score vector (MLPerf's ``normalize=True``)."""

    def __init__(self, query_size: int, key_size: int, units: int, init: float) -> None:
        super().__init__()
        self.linear_q = nn.Linear(query_size, units, bias=False)
        self.linear_k = nn.Linear(key_size, units, bias=False)
        self.v = nn.Parameter(torch.empty(units).uniform_(-init, init))
        self.g = nn.Parameter(torch.full((1,), 1.0 / math.sqrt(units)))
        self.b = nn.Parameter(torch.zeros(units))

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.linear_k(memory)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``query [N, T, Hq]`` against projected ``keys [N, S, U]``: the context ``[N, T, H]``
        (a weighted sum of ``memory``) and the attention weights ``[N, T, S]``."""
        q = self.linear_q(query)
        v = self.g * self.v / self.v.norm()
        energy = torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1) + self.b)  # [N, T, S, U]
        scores = energy.matmul(v)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = F.softmax(scores, dim=-1)
        return weights.bmm(memory), weights


class GNMT(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        *,
        hidden_size: int = 1024,
        layers: int = 4,
        dropout: float = 0.2,
        init: float = 0.1,
    ) -> None:
        super().__init__()
        if layers < 2:
            raise ConfigError(f"GNMT needs at least 2 layers per side, not {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), not {dropout}")
        h = hidden_size
        self.vocab_size = vocab_size
        self.hidden_size = h
        self.embedding = nn.Embedding(vocab_size, h, padding_idx=PAD)
        self.encoder = nn.ModuleList(
            [
                nn.LSTM(h, h, batch_first=True, bidirectional=True),
                nn.LSTM(2 * h, h, batch_first=True),
                *[nn.LSTM(h, h, batch_first=True) for _ in range(layers - 2)],
            ]
        )
        self.attention = NormalizedBahdanauAttention(h, h, h, init)
        self.decoder = nn.ModuleList(
            [
                nn.LSTM(h, h, batch_first=True),
                *[nn.LSTM(2 * h, h, batch_first=True) for _ in range(layers - 1)],
            ]
        )
        self.classifier = nn.Linear(h, vocab_size)
        self.dropout = nn.Dropout(dropout)
        for name, p in self.named_parameters():
            if name not in ("attention.g", "attention.b"):
                nn.init.uniform_(p, -init, init)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()

    # -- encoder ------------------------------------------------------------------------------

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> GNMTState:
        """Run the encoder over ``src [N, S]`` (true lengths ``src_len [N]``) and prepare the
        decoder's state: zero LSTM states, the encoder output and its projected keys."""
        n, s = src.shape
        x = self.dropout(self.embedding(src))
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = _lstm(self.encoder[0], packed)
        x, _ = pad_packed_sequence(out, batch_first=True, total_length=s)  # type: ignore[arg-type]
        x, _ = _lstm(self.encoder[1], self.dropout(x))
        for lstm in self.encoder[2:]:
            y, _ = _lstm(lstm, self.dropout(x))
            x = x + y
        mask = torch.arange(s, device=src.device).unsqueeze(0) < src_len.to(src.device)[:, None]
        zeros = x.new_zeros(1, n, self.hidden_size)
        hidden = tuple((zeros, zeros) for _ in self.decoder)
        return GNMTState(hidden, x, self.attention.project_keys(x), mask)

    # -- decoder ------------------------------------------------------------------------------

    def _decode(
        self, tokens: torch.Tensor, state: GNMTState
    ) -> tuple[torch.Tensor, GNMTState, torch.Tensor]:
        """Decoder over ``tokens [N, T]`` from ``state``: logits ``[N, T, V]``, the state after
        the last step, attention ``[N, T, S]``."""
        new_hidden: list[LSTMState] = []
        x = self.dropout(self.embedding(tokens))
        q, hc = _lstm(self.decoder[0], x, state.hidden[0])
        new_hidden.append(hc)
        context, weights = self.attention(q, state.keys, state.memory, state.mask)
        x = q
        for i, lstm in enumerate(self.decoder[1:], start=1):
            y, hc = _lstm(lstm, torch.cat([self.dropout(x), context], dim=-1), state.hidden[i])
            new_hidden.append(hc)
            x = x + y if i >= 2 else y
        logits = self.classifier(x)
        return logits, state._replace(hidden=tuple(new_hidden)), weights

    def forward(
        self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor
    ) -> torch.Tensor:
        """Teacher forcing: logits ``[N, T, V]`` for ``tgt_in [N, T]`` (BOS + target)."""
        logits, _, _ = self._decode(tgt_in, self.encode(src, src_len))
        return logits

    def decode_step(
        self, tokens: torch.Tensor, state: GNMTState
    ) -> tuple[torch.Tensor, GNMTState, torch.Tensor]:
        """One step for ``tokens [N]``: log-probabilities ``[N, V]``, the carried state, and the
        attention weights ``[N, S]`` (for the coverage penalty)."""
        logits, state, weights = self._decode(tokens.unsqueeze(1), state)
        return F.log_softmax(logits.squeeze(1).float(), dim=-1), state, weights.squeeze(1)

    @staticmethod
    def reorder_state(state: GNMTState, index: torch.Tensor) -> GNMTState:
        """Rows ``index`` of every batch-indexed tensor (beam expansion and reordering)."""
        return GNMTState(
            tuple((h.index_select(1, index), c.index_select(1, index)) for h, c in state.hidden),
            state.memory.index_select(0, index),
            state.keys.index_select(0, index),
            state.mask.index_select(0, index),
        )
