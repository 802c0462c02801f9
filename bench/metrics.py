"""Recognition metrics: sequence (captcha) accuracy, character accuracy and CER."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher

import pandas as pd
from torchmetrics.functional.text import char_error_rate


def sequence_accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Share of images read exactly."""
    return sum(p == t for p, t in zip(predictions, labels, strict=True)) / len(labels)


def char_accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Share of positions read right, over the longer of label and prediction (source 000's metric,
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


GAP = "∅"  # a character missing from the label or the prediction


def confusion_pairs(predictions: Sequence[str], labels: Sequence[str]) -> Counter[tuple[str, str]]:
    """Counts of (true character, read character), aligned by difflib's matching blocks;
    insertions and deletions pair with :data:`GAP`."""
    pairs: Counter[tuple[str, str]] = Counter()
    for pred, label in zip(predictions, labels, strict=True):
        matcher = SequenceMatcher(None, label, pred, autojunk=False)
        for _, i1, i2, j1, j2 in matcher.get_opcodes():
            true, read = label[i1:i2], pred[j1:j2]
            width = max(len(true), len(read))
            pairs.update(zip(true.ljust(width, GAP), read.ljust(width, GAP), strict=True))
    return pairs


def confusion_frame(predictions: pd.DataFrame, charset: str) -> pd.DataFrame:
    """Rows: true character, columns: read character (``GAP`` for missing/extra characters)."""
    pairs = confusion_pairs(
        predictions.prediction.fillna("").astype(str).tolist(),
        predictions.label.astype(str).tolist(),
    )
    axis = [*charset, GAP]
    frame = pd.DataFrame(0, index=axis, columns=axis)
    for (true, read), count in pairs.items():
        frame.loc[true, read] += count
    return frame
