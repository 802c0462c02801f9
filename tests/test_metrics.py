"""Metrics and the error analysis' minimal edit script (no training, no MLflow)."""

import random

import pandas as pd
import pytest
from rapidfuzz.distance import Levenshtein

from bench import metrics
from bench.metrics import GAP, confusion_frame, confusion_pairs, per_image
from bench.plots import confusion_figure


def off_diagonal(pairs) -> int:
    return sum(n for (true, read), n in pairs.items() if true != read)


def test_two_substitutions_are_two_errors():
    """difflib aligned 33n73 with 35n53 as six errors; the edit script has two."""
    pairs = confusion_pairs(["35n53"], ["33n73"])
    assert off_diagonal(pairs) == 2
    assert pairs[("3", "5")] == 1 and pairs[("7", "5")] == 1
    assert sum(n for (t, r), n in pairs.items() if t == r) == 3  # 3, n, 3 read right
    assert pairs[("3", "3")] == 2 and pairs[("n", "n")] == 1


def test_deletions_and_insertions_pair_with_the_gap():
    deleted = confusion_pairs(["ac"], ["abc"])
    assert deleted == {("a", "a"): 1, ("b", GAP): 1, ("c", "c"): 1}
    inserted = confusion_pairs(["abxyc"], ["abc"])
    assert inserted == {("a", "a"): 1, ("b", "b"): 1, (GAP, "x"): 1, (GAP, "y"): 1, ("c", "c"): 1}
    empty = confusion_pairs([""], ["ab"])
    assert empty == {("a", GAP): 1, ("b", GAP): 1}


def test_off_diagonal_sum_is_the_total_edit_distance_and_gives_the_cer():
    rng = random.Random(17)
    alphabet = "ab3n7"
    labels = ["".join(rng.choices(alphabet, k=rng.randint(1, 7))) for _ in range(300)]
    preds = ["".join(rng.choices(alphabet, k=rng.randint(0, 8))) for _ in range(300)]
    pairs = confusion_pairs(preds, labels)
    distance = sum(Levenshtein.distance(t, p) for p, t in zip(preds, labels, strict=True))
    assert off_diagonal(pairs) == distance
    # every label character is counted once, on a row of its own (the GAP row: insertions)
    assert sum(n for (t, _), n in pairs.items() if t != GAP) == sum(map(len, labels))
    length = sum(map(len, labels))
    assert off_diagonal(pairs) / length == pytest.approx(metrics.cer(preds, labels))


def test_confusion_frame_and_heatmap_title_count_the_edit_distance():
    frame = pd.DataFrame({"label": ["33n73", "ab"], "prediction": ["35n53", "abz"]})
    counts = confusion_frame(frame, "357abn")
    assert counts.loc["3", "5"] == 1 and counts.loc["7", "5"] == 1 and counts.loc[GAP, "z"] == 1
    assert list(counts.index) == [*"357abn", "z", GAP]  # an unexpected character gets a row
    figure = confusion_figure(counts, "t")
    assert figure.axes[0].get_title() == "t (3 character errors)"


def test_per_image_counts_sum_to_the_metrics():
    labels = ["33n73", "abc", "abc", "xy"]
    preds = ["35n53", "abc", "ab", ""]
    counts = per_image(pd.DataFrame({"label": labels, "prediction": preds}))
    summary = metrics.summarize(preds, labels)
    assert counts.correct.mean() == pytest.approx(summary["seq_acc"])
    assert counts.right.sum() / counts.positions.sum() == pytest.approx(summary["char_acc"])
    assert counts.distance.sum() / counts.length.sum() == pytest.approx(summary["cer"])
