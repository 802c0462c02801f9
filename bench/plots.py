"""Figures shared by MLflow runs and reports."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def confusion_figure(counts: pd.DataFrame, title: str) -> plt.Figure:
    """Heatmap of the off-diagonal of a (true x read) count table: the mistakes alone."""
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
    ax.set_title(f"{title} ({int(errors.values.sum())} errors)")
    figure.tight_layout()
    return figure
