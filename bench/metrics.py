"""Recognition metrics: sequence (captcha) accuracy, character accuracy and CER."""

from __future__ import annotations

from collections.abc import Sequence

from torchmetrics.functional.text import char_error_rate


def sequence_accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Share of images read exactly."""
    return sum(p == t for p, t in zip(predictions, labels, strict=True)) / len(labels)


def char_accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Share of positions read right, over the longer of label and prediction (seed 000's metric,
    extended to unequal lengths: a missing or extra character counts as a wrong position)."""
    right = sum(
        sum(a == b for a, b in zip(p, t, strict=False))
        for p, t in zip(predictions, labels, strict=True)
    )
    return right / sum(max(len(p), len(t)) for p, t in zip(predictions, labels, strict=True))


def cer(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Character error rate (torchmetrics): total edit distance over total label length."""
    return float(char_error_rate(list(predictions), list(labels)))


def summarize(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    return {
        "seq_acc": sequence_accuracy(predictions, labels),
        "char_acc": char_accuracy(predictions, labels),
        "cer": cer(predictions, labels),
    }
