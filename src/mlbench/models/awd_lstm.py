"""AWD-LSTM (Merity, Keskar and Socher 2017), the model of task 3a.

Shape (the reference's WikiText-2 configuration): embedding ``V×400``; three *separate*
single-layer LSTMs 400→1150, 1150→1150, 1150→400 (the last is 400 wide so the decoder can share
the embedding matrix); a decoder ``400→V`` with its own bias and the embedding as its weight.
At V = 33,278 that is 33,556,078 parameters.

Regularisers, all active in training mode only:

* **embedding dropout** (``dropoute`` 0.1): whole rows of the embedding matrix — a dropped word
  is dropped everywhere in the batch. The reference multiplies the full ``V×400`` matrix by a row
  mask every step; here the looked-up rows are multiplied by their rows' mask values, which gives
  the same values and gradients without materialising a masked copy of the matrix.
* **locked (variational) dropout**: one mask per sequence and feature, shared over time — on the
  embeddings (``dropouti`` 0.65), between LSTM layers (``dropouth`` 0.2) and on the last layer's
  output (``dropout`` 0.4).
* **weight drop** (``wdrop`` 0.5): DropConnect on each layer's hidden-to-hidden matrix, one mask
  per forward, shared over time steps. See :class:`WeightDropLSTM` for how it trains.
* **AR / TAR** (α 2, β 1) are loss terms; :func:`activation_regularization` computes them from
  the per-layer outputs :class:`AWDLSTM` returns.

The forward pass returns logits and the new hidden state (the caller carries it between BPTT
windows and detaches it with :func:`detach_hidden`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: one (h, c) pair per layer, each ``[1, batch, width]``
Hidden = list[tuple[torch.Tensor, torch.Tensor]]


class LMOutput(NamedTuple):
    """What :meth:`AWDLSTM.forward` returns (a tuple, so wrappers such as DDP can walk it).

    ``logits``: ``[T, B, V]``. ``raw``: each layer's LSTM output before dropout (TAR uses the
    last). ``dropped``: each layer's output after its locked dropout (``dropouth`` between layers,
    ``dropout`` on the last; AR uses the last, which is also what the decoder reads).
    """

    logits: torch.Tensor
    hidden: Hidden
    raw: list[torch.Tensor]
    dropped: list[torch.Tensor]


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout with one mask per (sequence, feature), shared by every time step of ``x``
    (``[T, B, H]``): the same units of a sequence are off for the whole window."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * mask


def embedding_dropout(
    embedding: nn.Embedding, words: torch.Tensor, p: float, training: bool
) -> torch.Tensor:
    """Look ``words`` up with whole rows of the matrix dropped (and the kept rows scaled by
    ``1/(1−p)``): equal to the reference's lookup in a row-masked copy of the matrix."""
    if not training or p == 0.0:
        return embedding(words)
    weight = embedding.weight
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - p).div_(1.0 - p)
    return F.embedding(words, weight) * mask[words]


class WeightDropLSTM(nn.Module):
    """A single-layer ``nn.LSTM`` with DropConnect on its hidden-to-hidden weight.

    How the raw weight trains: ``lstm.weight_hh_l0`` stays the registered ``nn.Parameter`` (the
    one the optimizer, the communication schemes and checkpoints see). Each training forward
    computes ``dropped = dropout(weight_hh_l0, p)`` as an ordinary autograd op and runs the LSTM
    through ``torch.func.functional_call`` with ``dropped`` substituted for that one weight, for
    that call only. The gradient reaches the raw weight through the dropout (``mask/(1−p)`` times
    the gradient of the dropped weight), and afterwards the module holds its Parameter again.

    Why not the alternatives: the reference's ``WeightDrop`` deletes the Parameter and registers
    ``weight_hh_l0_raw``, then assigns a plain tensor in each forward — fragile with ``nn.LSTM``'s
    cached flat weights and broken on newer PyTorch; ``torch.nn.utils.parametrize`` on an LSTM
    silently stops its weights training (pytorch/pytorch#65688). Either way a registered tensor
    can end up with no gradient, which a bucketed all-reduce would ship as zeros and DDP rejects.

    On CUDA the substituted weight is not part of cuDNN's flat weight buffer, so cuDNN copies the
    weights each call (PyTorch warns once); correctness is unaffected.
    """

    def __init__(self, input_size: int, hidden_size: int, weight_drop: float) -> None:
        super().__init__()
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must be in [0, 1), not {weight_drop}")
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=1)
        self.weight_drop = weight_drop

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if (
            x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.float16
        ):
            # oneDNN has no fp16 LSTM on CPU ("could not create a primitive descriptor"): under
            # CPU fp16 autocast this layer runs in fp32 (bf16 and CUDA fp16 run as asked)
            with torch.autocast("cpu", enabled=False):
                h, c = state
                return self._forward(x.float(), (h.float(), c.float()))
        return self._forward(x, state)

    def _forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if self.training and self.weight_drop > 0.0:
            raw = self.lstm.weight_hh_l0
            assert isinstance(raw, torch.Tensor)
            dropped = F.dropout(raw, self.weight_drop, training=True)
            out: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
            out = torch.func.functional_call(self.lstm, {"weight_hh_l0": dropped}, (x, state))
            return out
        y, new_state = self.lstm(x, state)
        return y, new_state


class AWDLSTM(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        *,
        embedding_size: int = 400,
        hidden_size: int = 1150,
        layers: int = 3,
        dropout: float = 0.4,
        dropouth: float = 0.2,
        dropouti: float = 0.65,
        dropoute: float = 0.1,
        wdrop: float = 0.5,
        tie_weights: bool = True,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be at least 1, not {layers}")
        for name, p in (
            ("dropout", dropout),
            ("dropouth", dropouth),
            ("dropouti", dropouti),
            ("dropoute", dropoute),
        ):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {p}")
        self.dropout, self.dropouth, self.dropouti, self.dropoute = (
            dropout,
            dropouth,
            dropouti,
            dropoute,
        )
        last = embedding_size if tie_weights else hidden_size
        self.widths = [hidden_size] * (layers - 1) + [last]
        inputs = [embedding_size, *self.widths[:-1]]
        self.encoder = nn.Embedding(vocab_size, embedding_size)
        self.rnns = nn.ModuleList(
            WeightDropLSTM(i, o, wdrop) for i, o in zip(inputs, self.widths, strict=True)
        )
        self.decoder = nn.Linear(last, vocab_size)
        # the reference's init: U(−0.1, 0.1) embedding (= decoder weight when tied), zero bias;
        # the LSTMs keep PyTorch's default U(−1/√H, 1/√H)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero state for ``batch_size`` columns, on the model's device and dtype."""
        w = self.encoder.weight
        return [(w.new_zeros(1, batch_size, n), w.new_zeros(1, batch_size, n)) for n in self.widths]

    def forward(self, words: torch.Tensor, hidden: Hidden | None = None) -> LMOutput:
        """``words``: ``[T, B]`` token ids; ``hidden``: the state after the previous window (zero
        when None)."""
        if hidden is None:
            hidden = self.init_hidden(words.size(1))
        training = self.training
        x = embedding_dropout(self.encoder, words, self.dropoute, training)
        x = locked_dropout(x, self.dropouti, training)
        new_hidden: Hidden = []
        raw: list[torch.Tensor] = []
        dropped: list[torch.Tensor] = []
        last = len(self.rnns) - 1
        for layer, rnn in enumerate(self.rnns):
            x, state = rnn(x, hidden[layer])
            new_hidden.append(state)
            raw.append(x)
            x = locked_dropout(x, self.dropout if layer == last else self.dropouth, training)
            dropped.append(x)
        return LMOutput(self.decoder(x), new_hidden, raw, dropped)


def detach_hidden(hidden: Hidden) -> Hidden:
    """The state without its history: carried into the next window, backpropagated no further
    (truncated BPTT)."""
    return [(h.detach(), c.detach()) for h, c in hidden]


def activation_regularization(out: LMOutput, alpha: float, beta: float) -> torch.Tensor:
    """AR + TAR of the reference: ``α·mean(d²) + β·mean((r[t+1] − r[t])²)``, ``d`` the last
    layer's dropped output, ``r`` its raw output.

    AR penalises large activations of the (dropped) last layer, TAR large changes between time
    steps of its raw output. A one-step window has no TAR term.
    """
    ar = alpha * out.dropped[-1].pow(2).mean()
    raw = out.raw[-1]
    if raw.size(0) < 2:
        return ar
    return ar + beta * (raw[1:] - raw[:-1]).pow(2).mean()
