"""The report's figures (seaborn/matplotlib), returned as inline SVG text."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from bench.plots import confusion_figure
from bench.report.stats import pareto_front

sns.set_theme(style="whitegrid", context="notebook")
plt.rcParams["svg.fonttype"] = "none"  # text stays text: small files, selectable labels


def svg(figure: plt.Figure) -> str:
    """The figure as an ``<svg>`` element (matplotlib escapes every text it writes)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def cost_scatter(table: pd.DataFrame) -> str:
    """Test accuracy against parameters, FLOPs and training time, with each Pareto front."""
    costs = [
        ("params", "parameters"),
        ("flops", "FLOPs per image"),
        ("train_seconds", "training time (s)"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, (column, label) in zip(axes, costs, strict=True):
        data = table.dropna(subset=[column])
        sns.scatterplot(
            data=data, x=column, y="seq_acc", hue="approach", s=90, ax=ax, legend=ax is axes[-1]
        )
        ax.errorbar(
            data[column],
            data.seq_acc,
            yerr=data.seq_acc_half.fillna(0),
            fmt="none",
            ecolor="#999",
            elinewidth=1,
            capsize=3,
        )
        front = pareto_front(data[column].tolist(), data.seq_acc.tolist())
        ax.plot(
            data[column].iloc[front],
            data.seq_acc.iloc[front],
            "--",
            color="#c0392b",
            label="Pareto front",
        )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test sequence accuracy")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return svg(figure)


def learning_curves(curves: pd.DataFrame) -> str:
    """Validation sequence accuracy and loss per epoch: mean with a 95% band over seeds."""
    figure, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    for ax, column, label in (
        (axes[0], "val_seq_acc", "validation sequence accuracy"),
        (axes[1], "val_loss", "validation loss"),
    ):
        sns.lineplot(
            data=curves,
            x="epoch",
            y=column,
            hue="approach",
            errorbar=("ci", 95),
            ax=ax,
            legend=ax is axes[1],
        )
        ax.set_ylabel(label)
    axes[1].set_yscale("log")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return svg(figure)


STATE_COLOURS = {
    "complete": "#2874a6",
    "pruned": "#aaa",
    "failed": "#c0392b",
    "interrupted": "#e67e22",
}


def optimization_history(trials: pd.DataFrame) -> str:
    """Each trial's final validation accuracy and the best so far, coloured by its state."""
    figure, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.scatterplot(
        data=trials,
        x="trial",
        y="value",
        hue="state",
        ax=ax,
        s=50,
        palette={state: STATE_COLOURS.get(state, "#7f8c8d") for state in trials.state.unique()},
    )
    done = trials[trials.state == "complete"].sort_values("trial")
    if not done.empty:
        ax.step(done.trial, done.value.cummax(), where="post", color="#1e8449", label="best")
    ax.set_xlabel("trial")
    ax.set_ylabel("val sequence accuracy")
    ax.legend(frameon=False, fontsize=8)
    return svg(figure)


def importances(values: dict[str, float]) -> str:
    figure, ax = plt.subplots(figsize=(5, 0.45 * len(values) + 1))
    names = list(values)
    ax.barh(names, [values[n] for n in names], color="#5d6d7e")
    ax.invert_yaxis()
    ax.set_xlabel("importance (Optuna's default evaluator)")
    return svg(figure)


def confusion_heatmap(frame: pd.DataFrame, title: str) -> str:
    return svg(confusion_figure(frame, title))


def slice_bars(slices: pd.DataFrame) -> str:
    """Accuracy on labels with a doubled character against the rest, per approach."""
    figure, ax = plt.subplots(figsize=(8, 3.6))
    sns.barplot(data=slices, x="approach", y="seq_acc", hue="slice", ax=ax, errorbar=None)
    ax.set_ylabel("test sequence accuracy")
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(frameon=False, fontsize=8)
    return svg(figure)
