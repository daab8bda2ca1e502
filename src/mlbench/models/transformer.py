"""Transformer "big" (Vaswani et al. 2017) in its pre-norm form, the model of task 4b.

Shape at the reference size (6+6 layers, d 1024, FFN 4096, 16 heads, V = 33,712 →
210,882,560 parameters):

* one embedding ``V×d`` shared by the encoder, the decoder and the output projection (which
  therefore has no weight of its own and no bias — fairseq's ``share_all_embeddings``);
  embeddings are scaled by ``√d`` and added to sinusoidal positions
  (``PE[p, 2i] = sin(p/10000^(2i/d))``, ``PE[p, 2i+1] = cos(…)``, positions from 0);
* **pre-norm** layers: ``x + dropout(sublayer(LayerNorm(x)))``, and a final LayerNorm after the
  last encoder layer and after the last decoder layer (without them a pre-norm stack's output is
  never normalised);
* attention with biases on the four projections; FFN ``d→4096→d`` with ReLU;
* dropout 0.1 on the embeddings and on every sub-layer's output, attention dropout 0.1 on the
  attention weights, ReLU dropout 0.1 inside the FFN — all off in eval mode.

The layers are written here, on :func:`torch.nn.functional.scaled_dot_product_attention`,
instead of ``nn.Transformer`` so the decoder can keep a cache: at each decoding step the new
token's self-attention keys/values are appended to each layer's cache, and the encoder-side
keys/values of the cross-attention are projected once in :meth:`Transformer.encode`.

Masks: the source's padded positions are masked as keys everywhere (encoder self-attention and
decoder cross-attention); decoder self-attention is causal. Targets are right-padded, so the
causal mask already keeps real positions from seeing the padding behind them.

Interface (shared with :mod:`mlbench.models.gnmt`, used by :mod:`mlbench.models.beam`):
``forward(src, src_len, tgt_in) -> logits``, ``encode``, ``decode_step``, ``reorder_state``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mlbench.errors import ConfigError

PAD = 0

KV = tuple[torch.Tensor, torch.Tensor]


def sinusoidal_positions(length: int, d: int, offset: int = 0) -> torch.Tensor:
    """``[length, d]`` positional encodings for positions ``offset … offset+length−1``."""
    pos = torch.arange(offset, offset + length, dtype=torch.float32).unsqueeze(1)
    inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)
    return pe


class Attention(nn.Module):
    """Multi-head attention whose keys/values can be projected once and reused (the caches)."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ConfigError(f"model width {d} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.heads, d // self.heads).transpose(1, 2)  # [N, heads, T, dh]

    def project_kv(self, x: torch.Tensor) -> KV:
        return self._split(self.k(x)), self._split(self.v(x))

    def forward(self, x: torch.Tensor, kv: KV, mask: torch.Tensor | None) -> torch.Tensor:
        """Queries from ``x [N, T, d]`` against ``kv`` (each ``[N, heads, S, dh]``); ``mask``
        broadcasts to ``[N, heads, T, S]``, True where attention is allowed."""
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(self._split(self.q(x)), *kv, attn_mask=mask, dropout_p=p)
        n, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(n, t, -1))


class FeedForward(nn.Module):
    def __init__(self, d: int, ffn: int, relu_dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.dropout = nn.Dropout(relu_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float, attn: float, relu: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = Attention(d, heads, attn)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, ffn, relu)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, self.self_attn.project_kv(h), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float, attn: float, relu: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.self_attn = Attention(d, heads, attn)
        self.norm2 = nn.LayerNorm(d)
        self.cross_attn = Attention(d, heads, attn)
        self.norm3 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, ffn, relu)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: KV | None,
        self_mask: torch.Tensor | None,
        memory: KV,
        memory_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, KV]:
        """``x [N, T, d]``; ``cache`` the keys/values of the earlier positions (None: none).
        Returns the output and the keys/values of every position so far (the new cache)."""
        h = self.norm1(x)
        k, v = self.self_attn.project_kv(h)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        x = x + self.dropout(self.self_attn(h, (k, v), self_mask))
        x = x + self.dropout(self.cross_attn(self.norm2(x), memory, memory_mask))
        return x + self.dropout(self.ffn(self.norm3(x))), (k, v)


class TransformerState(NamedTuple):
    """Decoder state between steps; batch is dim 0 of every tensor."""

    memory: tuple[KV, ...]  # per layer: cross-attention keys/values, projected once
    mask: torch.Tensor  # [N, 1, 1, S] bool, True at real source positions
    cache: tuple[KV, ...] | None  # per layer: self-attention keys/values so far (None: step 0)
    step: int  # position of the next token


class Transformer(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int = 1024,
        ffn_size: int = 4096,
        heads: int = 16,
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        relu_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, p in [("dropout", dropout), ("attention_dropout", attention_dropout)]:
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), not {p}")
        if d_model % 2:
            raise ConfigError(f"d_model must be even (sinusoidal positions), not {d_model}")
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        args = (d_model, heads, ffn_size, dropout, attention_dropout, relu_dropout)
        self.encoder = nn.ModuleList([EncoderLayer(*args) for _ in range(encoder_layers)])
        self.decoder = nn.ModuleList([DecoderLayer(*args) for _ in range(decoder_layers)])
        self.encoder_norm = nn.LayerNorm(d_model)
        self.decoder_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        # fairseq's initialisation: embeddings N(0, d^-1/2) (pad row zero), Xavier linear layers
        nn.init.normal_(self.embedding.weight, 0.0, d_model**-0.5)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _embed(self, tokens: torch.Tensor, offset: int) -> torch.Tensor:
        x = self.embedding(tokens) * math.sqrt(self.d_model)
        pe = sinusoidal_positions(tokens.size(1), self.d_model, offset).to(x.device, x.dtype)
        return self.dropout(x + pe)

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> TransformerState:
        """Encoder over ``src [N, S]``; the state holds each decoder layer's cross-attention
        keys/values, projected once, and the source mask."""
        s = src.size(1)
        valid = torch.arange(s, device=src.device).unsqueeze(0) < src_len.to(src.device)[:, None]
        mask = valid[:, None, None, :]
        x = self._embed(src, 0)
        for layer in self.encoder:
            x = layer(x, mask)
        x = self.encoder_norm(x)
        memory = tuple(layer.cross_attn.project_kv(x) for layer in self._decoder_layers())
        return TransformerState(memory, mask, None, 0)

    def _decoder_layers(self) -> list[DecoderLayer]:
        return [layer for layer in self.decoder if isinstance(layer, DecoderLayer)]

    def _decode(
        self, tokens: torch.Tensor, state: TransformerState
    ) -> tuple[torch.Tensor, TransformerState]:
        t = tokens.size(1)
        x = self._embed(tokens, state.step)
        causal: torch.Tensor | None = None
        if t > 1:
            past = 0 if state.cache is None else state.cache[0][0].size(2)
            causal = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
        caches: list[KV] = []
        for i, layer in enumerate(self.decoder):
            cache = None if state.cache is None else state.cache[i]
            x, kv = layer(x, cache, causal, state.memory[i], state.mask)
            caches.append(kv)
        logits = F.linear(self.decoder_norm(x), self.embedding.weight)
        return logits, state._replace(cache=tuple(caches), step=state.step + t)

    def forward(
        self, src: torch.Tensor, src_len: torch.Tensor, tgt_in: torch.Tensor
    ) -> torch.Tensor:
        """Teacher forcing: logits ``[N, T, V]`` for ``tgt_in [N, T]`` (BOS + target)."""
        logits, _ = self._decode(tgt_in, self.encode(src, src_len))
        return logits

    def decode_step(
        self, tokens: torch.Tensor, state: TransformerState
    ) -> tuple[torch.Tensor, TransformerState, None]:
        """One step for ``tokens [N]``: log-probabilities ``[N, V]``, the state with this
        position's keys/values appended, and no attention (no coverage penalty for 4b)."""
        logits, state = self._decode(tokens.unsqueeze(1), state)
        return F.log_softmax(logits.squeeze(1).float(), dim=-1), state, None

    @staticmethod
    def reorder_state(state: TransformerState, index: torch.Tensor) -> TransformerState:
        def pick(kv: KV) -> KV:
            return kv[0].index_select(0, index), kv[1].index_select(0, index)

        return TransformerState(
            tuple(pick(kv) for kv in state.memory),
            state.mask.index_select(0, index),
            None if state.cache is None else tuple(pick(kv) for kv in state.cache),
            state.step,
        )
