"""Recognition metrics: sequence (captcha) accuracy, character accuracy and CER."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein
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
    """Counts of (true character, read character) along a minimal edit script (Levenshtein
    opcodes): a matched character is on the diagonal, a substitution pairs the two characters, a
    deletion pairs the true character with :data:`GAP`, an insertion :data:`GAP` with the read
    one. The off-diagonal counts sum to the total edit distance, so with the labels' total length
    they give :func:`cer` back (``33n73`` read as ``35n53`` is two errors, not six)."""
    pairs: Counter[tuple[str, str]] = Counter()
    for pred, label in zip(predictions, labels, strict=True):
        for op in Levenshtein.opcodes(label, pred):
            true, read = label[op.src_start : op.src_end], pred[op.dest_start : op.dest_end]
            if op.tag == "delete":
                read = GAP * len(true)
            elif op.tag == "insert":
                true = GAP * len(read)
            pairs.update(zip(true, read, strict=True))  # equal and replace blocks: one to one
    return pairs


def confusion_frame(predictions: pd.DataFrame, charset: str) -> pd.DataFrame:
    """Rows: true character, columns: read character (``GAP`` for missing/extra characters; a
    character outside ``charset`` gets its own row and column)."""
    pairs = confusion_pairs(
        predictions.prediction.fillna("").astype(str).tolist(),
        predictions.label.astype(str).tolist(),
    )
    seen = {c for pair in pairs for c in pair} - {*charset, GAP}
    axis = [*charset, *sorted(seen), GAP]
    frame = pd.DataFrame(0, index=axis, columns=axis)
    for (true, read), count in pairs.items():
        frame.loc[true, read] += count
    return frame


def per_image(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per test image, the counts behind each metric (prediction table rows in, same order):
    ``correct`` (0/1), ``distance`` (edit distance) over ``length`` (label length) for CER,
    ``right`` (positions read right) over ``positions`` (the longer of label and prediction) for
    character accuracy. Summed over images, each pair gives the metric of :func:`summarize`."""
    labels = predictions.label.astype(str).tolist()
    preds = predictions.prediction.fillna("").astype(str).tolist()
    return pd.DataFrame(
        {
            "correct": [float(p == t) for p, t in zip(preds, labels, strict=True)],
            "distance": [
                float(Levenshtein.distance(t, p)) for p, t in zip(preds, labels, strict=True)
            ],
            "length": [float(len(t)) for t in labels],
            "right": [
                float(sum(a == b for a, b in zip(p, t, strict=False)))
                for p, t in zip(preds, labels, strict=True)
            ],
            "positions": [float(max(len(p), len(t))) for p, t in zip(preds, labels, strict=True)],
        },
        index=predictions.index,
    ).astype(np.float64)
