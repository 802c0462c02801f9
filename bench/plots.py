"""Figures shared by MLflow runs and reports."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def confusion_figure(counts: pd.DataFrame, title: str) -> plt.Figure:
    """Heatmap of the off-diagonal of a (true x read) count table: the mistakes alone; the title
    gives their number (with :func:`bench.metrics.confusion_frame`, the total edit distance)."""
    errors = counts.mask(np.eye(len(counts), dtype=bool), 0)
    size = max(5.0, len(counts) * 0.38)
    figure, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(
        errors,
        annot=len(counts) <= 25,
        fmt="d",
        cmap="Reds",
        cbar=False,
        ax=ax,
        linewidths=0.5,
        linecolor="#eee",
    )
    ax.set_xlabel("read as")
    ax.set_ylabel("true character")
    ax.set_title(f"{title} ({int(errors.values.sum())} character errors)")
    figure.tight_layout()
    return figure


GALLERY_SIZE = 24


def misread_gallery(predictions: pd.DataFrame, store, split: str = "test") -> plt.Figure:
    """Up to 24 misread images of ``split``, each titled ``label -> prediction``."""
    wrong = predictions[~predictions.correct].head(GALLERY_SIZE)
    index = {name: i for i, name in enumerate(store.files)}
    cols = 4
    rows = max(1, -(-len(wrong) // cols))
    figure, axes = plt.subplots(rows, cols, figsize=(cols * 3, rows * 1.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, wrong.itertuples(), strict=False):
        image = store.images[index[row.file]]
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
        ax.set_title(f"{row.label} -> {row.prediction or '(empty)'}", fontsize=8, color="firebrick")
    if wrong.empty:
        axes.flat[0].text(0.5, 0.5, f"no misread {split} images", ha="center", va="center")
    figure.tight_layout()
    return figure


def run_figures(
    predictions: pd.DataFrame, store, charset: str, split: str
) -> dict[str, plt.Figure]:
    """A run's figures by artifact name: its misread images and its character confusions."""
    from bench.metrics import confusion_frame

    counts = confusion_frame(predictions, charset)
    return {
        "misread.png": misread_gallery(predictions, store, split),
        "confusion.png": confusion_figure(counts, f"{split} character confusions"),
    }
