"""A suite's results as the console shows them after a run."""

from __future__ import annotations

import pandas as pd

from bench.suite.schema import Suite


def summary_table(suite: Suite) -> pd.DataFrame:
    """The report's leaderboard numbers, one row per dataset and approach."""
    from bench.report.data import load_comparison
    from bench.report.tables import leaderboard

    comparison = load_comparison([suite.experiment], suite.name)
    frames = []
    for dataset, runs in comparison.runs.groupby("tags.dataset"):
        table = leaderboard(comparison, runs)
        frames.append(table.assign(dataset=dataset))
    table = pd.concat(frames, ignore_index=True)

    def pm(col: str) -> pd.Series:
        """``mean (low–high)``: the interval as its bounds, inside [0, 100%] by construction."""
        bounds = [
            "" if pd.isna(low) else f" ({low:.2%}–{high:.2%})"
            for low, high in zip(table[f"{col}_low"], table[f"{col}_high"], strict=True)
        ]
        return table[col].map("{:.2%}".format) + bounds

    return pd.DataFrame(
        {
            "dataset": table.dataset,
            "approach": table.approach,
            "n": table.n,
            "seq_acc": pm("seq_acc"),
            "char_acc": pm("char_acc"),
            "cer": pm("cer"),
            "params": table.params.map(lambda v: f"{v / 1e6:.2f}M"),
            "train_s": table.train_seconds.map("{:.0f}".format),
        }
    )
