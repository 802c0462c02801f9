"""Label codecs: how strings become targets, how logits become a loss and strings again.

Every model emits logits shaped ``(batch, steps, classes)``. Class 0 is reserved in both codecs:
the padding class of :class:`CECodec` and the blank of :class:`CTCCodec`; characters are 1..n.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.errors import LabelError


@dataclass(frozen=True)
class Targets:
    """Encoded labels: ``(N, max_len)`` int64 indices padded with 0, and each label's length."""

    indices: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str) -> Targets:
        return Targets(self.indices.to(device), self.lengths.to(device))

    def __getitem__(self, idx: torch.Tensor) -> Targets:
        return Targets(self.indices[idx], self.lengths[idx])


class Codec:
    """Shared part of both codecs: the charset and the string <-> index mapping."""

    kind: str

    def __init__(self, charset: str, max_len: int):
        if len(set(charset)) != len(charset) or not charset:
            raise LabelError(f"charset must be non-empty with unique characters, got {charset!r}")
        self.charset = charset
        self.max_len = max_len
        self._index = {c: i + 1 for i, c in enumerate(charset)}

    @property
    def num_classes(self) -> int:
        return len(self.charset) + 1

    def encode(self, labels: Sequence[str]) -> Targets:
        """Encode strings; raises :class:`LabelError` naming the first bad label."""
        indices = torch.zeros(len(labels), self.max_len, dtype=torch.long)
        lengths = torch.zeros(len(labels), dtype=torch.long)
        for row, label in enumerate(labels):
            if not label or len(label) > self.max_len:
                raise LabelError(
                    f"label {label!r} has {len(label)} characters; this {self.kind} head reads "
                    f"1 to {self.max_len}"
                )
            unknown = sorted(set(label) - self._index.keys())
            if unknown:
                raise LabelError(
                    f"label {label!r} has characters {''.join(unknown)!r} outside the charset "
                    f"{self.charset!r}"
                )
            indices[row, : len(label)] = torch.tensor([self._index[c] for c in label])
            lengths[row] = len(label)
        return Targets(indices, lengths)

    def to_string(self, indices: Sequence[int]) -> str:
        return "".join(self.charset[i - 1] for i in indices if i > 0)

    def loss(
        self, logits: torch.Tensor, targets: Targets, graph_safe: bool = False
    ) -> torch.Tensor:
        """Mean loss; ``graph_safe`` asks for an implementation that CUDA graphs can capture."""
        raise NotImplementedError

    def decode(self, logits: torch.Tensor) -> list[str]:
        raise NotImplementedError


class CECodec(Codec):
    """Fixed positions: position i predicts character i or the padding class 0."""

    kind = "ce"

    def __init__(self, charset: str, max_len: int, label_smoothing: float = 0.0):
        super().__init__(charset, max_len)
        self.label_smoothing = label_smoothing

    def loss(
        self, logits: torch.Tensor, targets: Targets, graph_safe: bool = False
    ) -> torch.Tensor:
        if logits.shape[1] != self.max_len:
            raise ValueError(
                f"CE head emits {logits.shape[1]} positions, codec expects {self.max_len}"
            )
        return F.cross_entropy(
            logits.float().flatten(0, 1),
            targets.indices.flatten(),
            label_smoothing=self.label_smoothing,
        )

    def decode(self, logits: torch.Tensor) -> list[str]:
        return [self.to_string(row) for row in logits.argmax(-1).tolist()]


class CTCCodec(Codec):
    """CTC with blank 0; greedy or prefix beam search decoding."""

    kind = "ctc"

    def __init__(
        self,
        charset: str,
        max_len: int,
        decoder: str = "greedy",
        beam_width: int = 10,
        emission_threshold: float | None = None,
    ):
        super().__init__(charset, max_len)
        if decoder not in ("greedy", "beam"):
            raise ValueError(f"decoder must be 'greedy' or 'beam', got {decoder!r}")
        self.decoder = decoder
        self.beam_width = beam_width
        self.emission_threshold = emission_threshold

    def loss(
        self, logits: torch.Tensor, targets: Targets, graph_safe: bool = False
    ) -> torch.Tensor:
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, N, C)
        if graph_safe:
            return ctc_loss_dense(log_probs, targets.indices, targets.lengths)
        steps = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long)
        return F.ctc_loss(
            log_probs, targets.indices, steps, targets.lengths, blank=0, zero_infinity=True
        )

    def decode(self, logits: torch.Tensor) -> list[str]:
        if self.decoder == "greedy":
            return [self.to_string(p) for p in greedy_ctc(logits)]
        log_probs = logits.float().log_softmax(-1).cpu()
        return [
            self.to_string(beam_search_ctc(lp, self.beam_width, self.emission_threshold)[0])
            for lp in log_probs
        ]


NEG = -1e30  # a finite "log 0": logsumexp's gradient is NaN where every input is -inf


def ctc_loss_dense(
    log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """``F.ctc_loss(log_probs, targets, T, lengths, blank=0, zero_infinity=True)`` for inputs that
    all span the ``T`` steps of ``log_probs`` ``(T, N, C)``, in tensor ops only.

    torch's CTC kernels read the lengths on the host (a device-to-host copy, then a host-to-device
    copy of offsets), which a CUDA graph cannot capture; this forward recursion over the
    blank-extended labels (``2S + 1`` states) runs on the device end to end and autograd gives its
    gradient. ``targets`` ``(N, S)`` are padded with 0 beyond each ``lengths`` entry.
    """
    steps, n, _ = log_probs.shape
    ext = targets.new_zeros(n, 2 * targets.shape[1] + 1)
    ext[:, 1::2] = targets  # blank, c1, blank, c2, ..., blank
    emit = log_probs.gather(2, ext.unsqueeze(0).expand(steps, -1, -1))  # (T, N, 2S + 1)
    # a state may skip the blank before it unless it repeats the character two states back
    skip = torch.zeros_like(ext, dtype=torch.bool)
    skip[:, 2:] = (ext[:, 2:] != 0) & (ext[:, 2:] != ext[:, :-2])
    alpha = torch.cat([emit[0, :, :2], emit.new_full((n, ext.shape[1] - 2), NEG)], 1)
    for t in range(1, steps):
        stay = alpha
        advance = F.pad(alpha[:, :-1], (1, 0), value=NEG)
        jump = F.pad(alpha[:, :-2], (2, 0), value=NEG).masked_fill(~skip, NEG)
        alpha = torch.logsumexp(torch.stack([stay, advance, jump]), 0) + emit[t]
    last = 2 * lengths.unsqueeze(1)  # the final blank, and the last character before it
    ends = torch.cat([alpha.gather(1, last), alpha.gather(1, last - 1)], 1)
    loss = -torch.logsumexp(ends, 1)
    loss = torch.where(loss < -NEG / 2, loss, torch.zeros_like(loss))  # zero_infinity
    return (loss / lengths.clamp(min=1)).mean()


def greedy_ctc(logits: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per step, merge repeats, drop blanks."""
    best = logits.argmax(-1)
    keep = best != 0
    keep[:, 1:] &= best[:, 1:] != best[:, :-1]
    return [row[mask].tolist() for row, mask in zip(best.cpu(), keep.cpu(), strict=True)]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def beam_search_ctc(
    log_probs: torch.Tensor, beam_width: int = 10, emission_threshold: float | None = None
) -> tuple[list[int], float]:
    """CTC prefix beam search over one sequence of ``(steps, classes)`` log-probabilities.

    Each prefix keeps two scores, ending in blank and ending in a character, so paths that collapse
    to the same labelling are summed rather than competing. Returns the best labelling and its
    log-probability. ``emission_threshold`` (a log-probability, as in source 000) skips characters
    that are unlikely at a step; the blank is never skipped.
    """
    lp = log_probs.tolist()
    ninf = -math.inf
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, ninf)}  # (blank, non-blank)
    for row in lp:
        candidates = [
            c
            for c in range(1, len(row))
            if emission_threshold is None or row[c] >= emission_threshold
        ]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [ninf, ninf])
        for prefix, (p_b, p_nb) in beams.items():
            total = _logaddexp(p_b, p_nb)
            entry = nxt[prefix]
            entry[0] = _logaddexp(entry[0], total + row[0])
            if prefix:
                entry[1] = _logaddexp(entry[1], p_nb + row[prefix[-1]])
            for c in candidates:
                extended = nxt[(*prefix, c)]
                # a repeated character needs a blank between the two copies
                source = p_b if prefix and prefix[-1] == c else total
                extended[1] = _logaddexp(extended[1], source + row[c])
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)
        beams = {prefix: (s[0], s[1]) for prefix, s in ranked[:beam_width]}
    best, (p_b, p_nb) = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))
    return list(best), _logaddexp(p_b, p_nb)


def make_codec(kind: str, charset: str, max_len: int, **options) -> Codec:
    """Build the codec an approach declares (``"ce"`` or ``"ctc"``)."""
    codecs = {"ce": CECodec, "ctc": CTCCodec}
    if kind not in codecs:
        raise ValueError(f"unknown codec {kind!r}; expected one of {sorted(codecs)}")
    return codecs[kind](charset, max_len, **options)
