"""The report's figures (seaborn/matplotlib), returned as inline SVG text.

Every figure follows :mod:`bench.report.style` (an approach's colour, percent and log axes); a
panel with nothing to draw (or only accuracies of 0) is a :class:`Panel` holding one line saying
why instead of an empty plot.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, MaxNLocator

from bench.plots import confusion_figure
from bench.report.stats import pareto_front
from bench.report.style import (
    accuracy_axis,
    approach_order,
    approach_palette,
    compact,
    integer_axis,
    log_axis,
    percent_axis,
    side_legend,
)


@dataclass(frozen=True)
class Panel:
    """A figure as inline SVG, or, when there is nothing to draw, the reason in one line."""

    svg: str | None = None
    note: str | None = None


def svg(figure: plt.Figure) -> str:
    """The figure as an ``<svg>`` element (matplotlib escapes every text it writes)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


NOTHING_READ = "no approach read any image yet"


def read_nothing(accuracies: pd.Series) -> bool:
    """Every accuracy there is to plot is 0 (a flat line at the axis' bottom: nothing to see)."""
    values = accuracies.dropna()
    return not values.empty and bool((values == 0).all())


# ------------------------------------------------------------------------------------ figures


def cost_scatter_figure(table: pd.DataFrame) -> plt.Figure:
    """Test accuracy against parameters, FLOPs and training time, with each Pareto front; the
    error bars are the asymmetric 95% intervals of the leaderboard (``seq_acc_low``/``_high``)."""
    costs = [
        ("params", "parameters"),
        ("flops", "FLOPs per image"),
        ("train_seconds", "training time (s)"),
    ]
    palette = approach_palette(table.approach)
    order = approach_order(table.approach)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    drawn = []
    for ax, (column, label) in zip(axes, costs, strict=True):
        data = table[table[column] > 0].dropna(subset=[column])
        same = not data.empty and data[column].max() <= 1.02 * data[column].min()
        if data.empty or same:  # an equal time budget: every run trained as long
            note = f"no {label} logged" if data.empty else f"{label}: {data[column].min():,.0f}"
            ax.text(  # right-aligned: the legend may take the panel's left
                0.98,
                0.5,
                f"{note}\nfor every approach",
                ha="right",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
            continue
        drawn.append(ax)
        for row in data.itertuples():
            low, high = getattr(row, "seq_acc_low", np.nan), getattr(row, "seq_acc_high", np.nan)
            if not (pd.isna(low) or pd.isna(high)):
                ax.errorbar(
                    [getattr(row, column)],
                    [row.seq_acc],
                    yerr=[[max(row.seq_acc - low, 0.0)], [max(high - row.seq_acc, 0.0)]],
                    fmt="none",
                    ecolor=palette[row.approach],
                    elinewidth=1.2,
                    capsize=3,
                )
        sns.scatterplot(
            data=data,
            x=column,
            y="seq_acc",
            hue="approach",
            hue_order=[a for a in order if a in set(data.approach)],
            palette=palette,
            s=90,
            ax=ax,
            zorder=3,
            clip_on=False,  # a point at 0% or 100% sits on the axis' edge, whole
        )
        front = pareto_front(data[column].tolist(), data.seq_acc.tolist())
        ax.plot(
            data[column].iloc[front],
            data.seq_acc.iloc[front],
            "--",
            color="#c0392b",
            label="Pareto front",
        )
        log_axis(ax, "x")
        ax.set_xlabel(label)
        ax.set_ylabel("test sequence accuracy")
    accuracy_axis(axes[0])  # the y axis is shared
    for ax in drawn[:-1]:
        ax.get_legend().remove()
    if drawn:
        side_legend(drawn[-1])
    return figure


def cost_scatter(table: pd.DataFrame) -> Panel:
    if read_nothing(table.seq_acc):
        return Panel(note=NOTHING_READ)
    return Panel(svg(cost_scatter_figure(table)))


def epochs_per_run(curves: pd.DataFrame) -> int:
    if curves.empty:
        return 0
    return int(curves.dropna(subset=["val_seq_acc"]).groupby(["approach", "seed"]).size().max())


def learning_curves_figure(curves: pd.DataFrame) -> plt.Figure:
    """Validation sequence accuracy and loss per epoch: mean with a 95% band over seeds; where
    every accuracy is 0, one line in the accuracy panel instead of a flat curve."""
    palette = approach_palette(curves.approach)
    order = approach_order(curves.approach)
    figure, axes = plt.subplots(1, 2, figsize=(14, 4.2))
    few = curves.epoch.max() <= 12
    for ax, column, label in (
        (axes[0], "val_seq_acc", "validation sequence accuracy"),
        (axes[1], "val_loss", "validation loss"),
    ):
        if column == "val_seq_acc" and read_nothing(curves[column]):
            ax.text(0.5, 0.5, NOTHING_READ, ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        sns.lineplot(
            data=curves,
            x="epoch",
            y=column,
            hue="approach",
            hue_order=order,
            palette=palette,
            errorbar=("ci", 95),
            marker="o" if few else None,
            clip_on=False,  # a marker at 0% or 100% sits on the axis' edge, whole
            ax=ax,
            legend=ax is axes[1],
        )
        ax.set_ylabel(label)
        integer_axis(ax.xaxis)
    accuracy_axis(axes[0])
    if (curves.val_loss.dropna() > 0).all() and curves.val_loss.notna().any():
        log_axis(axes[1], "y")
    side_legend(axes[1])
    return figure


def learning_curves(curves: pd.DataFrame) -> Panel:
    epochs = epochs_per_run(curves)
    if epochs <= 1:
        return Panel(
            note=f"{epochs} epoch per run: no curve to draw"
            if epochs
            else "no validation metrics logged per epoch: no curve to draw"
        )
    return Panel(svg(learning_curves_figure(curves)))


GRID = 200  # points of the common time grid per approach


def time_bands(curves: pd.DataFrame) -> pd.DataFrame:
    """Per approach, each seed's validation accuracy against its training seconds (``elapsed``)
    linearly interpolated onto a common grid (a seed counts only inside its own time span): the
    mean over the seeds and their range (columns approach, seconds, mean, low, high, seeds)."""
    frames = []
    timed = curves.dropna(subset=["elapsed", "val_seq_acc"])
    for approach, group in timed.groupby("approach", sort=False):
        runs = [g.sort_values("elapsed") for _, g in group.groupby("seed")]
        runs = [r for r in runs if len(r) >= 2]
        if not runs:
            continue
        grid = np.linspace(
            min(r.elapsed.iloc[0] for r in runs), max(r.elapsed.iloc[-1] for r in runs), GRID
        )
        values = np.full((len(runs), GRID), np.nan)
        for i, r in enumerate(runs):
            inside = (grid >= r.elapsed.iloc[0]) & (grid <= r.elapsed.iloc[-1])
            values[i, inside] = np.interp(grid[inside], r.elapsed, r.val_seq_acc)
        frames.append(
            pd.DataFrame(
                {
                    "approach": approach,
                    "seconds": grid,
                    "mean": nan_stat(values, np.nanmean),
                    "low": nan_stat(values, np.nanmin),
                    "high": nan_stat(values, np.nanmax),
                    "seeds": (~np.isnan(values)).sum(0),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def nan_stat(values: np.ndarray, stat: Callable[..., np.ndarray]) -> np.ndarray:
    """``stat`` over the rows of each column that has a value (NaN where none has)."""
    out = np.full(values.shape[1], np.nan)
    some = ~np.isnan(values).all(0)
    out[some] = stat(values[:, some], axis=0)
    return out


def time_curves_figure(bands: pd.DataFrame) -> plt.Figure:
    palette = approach_palette(bands.approach)
    figure, ax = plt.subplots(figsize=(9, 4.2))
    for approach in approach_order(bands.approach):
        band = bands[bands.approach == approach]
        colour = palette[approach]
        ax.plot(band.seconds, band["mean"], color=colour, label=approach)
        ax.fill_between(band.seconds, band.low, band.high, color=colour, alpha=0.18, lw=0)
    ax.set_xlabel("training seconds (validation excluded)")
    ax.set_ylabel("validation sequence accuracy")
    ax.set_xlim(left=0)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    accuracy_axis(ax)
    side_legend(ax)
    return figure


def time_curves(curves: pd.DataFrame) -> Panel:
    """Validation sequence accuracy against training seconds per approach: mean over seeds, band:
    their range."""
    if curves.empty or curves.elapsed.isna().all():
        return Panel(note="no training times logged per epoch: no curve to draw")
    bands = time_bands(curves)
    if bands.empty:
        return Panel(note="1 epoch per run: no curve to draw")
    if read_nothing(bands["mean"]):
        return Panel(note=NOTHING_READ)
    return Panel(svg(time_curves_figure(bands)))


STATE_COLOURS = {
    "complete": "#2874a6",
    "pruned": "#aaa",
    "failed": "#c0392b",
    "interrupted": "#e67e22",
}


def optimization_history_figure(trials: pd.DataFrame) -> plt.Figure:
    """Each trial's final validation CER (the objective, lower is better) coloured by its state,
    and the best so far: the running minimum over complete trials."""
    figure, ax = plt.subplots(figsize=(6.5, 3.4))
    shown = trials.dropna(subset=["value"])
    sns.scatterplot(
        data=shown,
        x="trial",
        y="value",
        hue="state",
        ax=ax,
        s=50,
        palette={state: STATE_COLOURS.get(state, "#7f8c8d") for state in shown.state.unique()},
    )
    done = shown[shown.state == "complete"].sort_values("trial")
    ax.step(done.trial, done.value.cummin(), where="post", color="#1e8449", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation CER (lower is better)")
    integer_axis(ax.xaxis)
    percent_axis(ax.yaxis)
    ax.legend(frameon=False, fontsize=8)
    return figure


def optimization_history(trials: pd.DataFrame) -> Panel:
    if not ((trials.state == "complete") & trials.value.notna()).any():
        return Panel(note="no completed trial with a validation CER: no history to draw")
    return Panel(svg(optimization_history_figure(trials)))


def importances(values: dict[str, float]) -> str:
    figure, ax = plt.subplots(figsize=(5, 0.45 * len(values) + 1))
    names = list(values)
    ax.barh(names, [values[n] for n in names], color="#5d6d7e")
    ax.invert_yaxis()
    ax.set_xlabel("importance (Optuna's default evaluator)")
    percent_axis(ax.xaxis)
    return svg(figure)


def confusion_heatmap(frame: pd.DataFrame, title: str) -> str:
    return svg(confusion_figure(frame, title))


def slice_bars_figure(slices: pd.DataFrame) -> plt.Figure:
    """Accuracy on labels with a doubled character against the rest, per approach."""
    figure, ax = plt.subplots(figsize=(8, 3.6))
    sns.barplot(
        data=slices,
        x="slice",
        y="seq_acc",
        hue="approach",
        hue_order=approach_order(slices.approach),
        palette=approach_palette(slices.approach),
        ax=ax,
        errorbar=None,
        saturation=1.0,  # the palette's own colours, as in the other figures
    )
    ax.set_ylabel("test sequence accuracy")
    ax.set_xlabel("")
    accuracy_axis(ax)
    side_legend(ax)
    return figure


def slice_bars(slices: pd.DataFrame) -> Panel:
    if slices.seq_acc.isna().all():
        return Panel(note="no test images: no slices to draw")
    if read_nothing(slices.seq_acc):
        return Panel(note=NOTHING_READ)
    return Panel(svg(slice_bars_figure(slices)))


def data_efficiency_figure(table: pd.DataFrame) -> plt.Figure:
    """Test sequence accuracy (with its 95% interval) and CER against the number of training
    images (log x), a colour per approach, solid from scratch, dashed from a pretrained model;
    dotted: the 90% and 95% levels."""
    palette = approach_palette(table.approach)
    figure, (acc_ax, cer_ax) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    for approach in approach_order(table.approach):
        mine = table[table.approach == approach]
        for start, rows in mine.sort_values("train_images").groupby("start", sort=False):
            errors = [
                rows.test_seq_acc - rows.test_seq_acc_low,
                rows.test_seq_acc_high - rows.test_seq_acc,
            ]
            style = {
                "color": palette[approach],
                "marker": "o",
                "linestyle": "--" if pretrained(start) else "-",
                "label": f"{approach}, pretrained" if pretrained(start) else approach,
            }
            acc_ax.errorbar(rows.train_images, rows.test_seq_acc, yerr=errors, capsize=3, **style)
            cer_ax.plot(rows.train_images, rows.test_cer, **style)
    for level in (0.9, 0.95):
        acc_ax.axhline(level, color="#888", linestyle=":", linewidth=0.8)
    acc_ax.set(xlabel="training images", ylabel="test sequence accuracy")
    cer_ax.set(xlabel="training images", ylabel="test CER")
    accuracy_axis(acc_ax)
    percent_axis(cer_ax.yaxis)
    for ax in (acc_ax, cer_ax):
        log_axis(ax)
    side_legend(cer_ax)
    return figure


def pretrained(start: str) -> bool:
    """Whether a curve's ``start`` names a pretrained model (``run:<id>``), not ``scratch``."""
    return str(start).startswith("run:")


def data_efficiency(table: pd.DataFrame) -> Panel:
    return Panel(svg(data_efficiency_figure(table)))


def robustness_figure(table: pd.DataFrame) -> plt.Figure:
    """Per corruption, test sequence accuracy (95% interval) against severity (0: clean), a
    colour per approach, dashed when pretrained, dotted with changed hyperparameters."""
    corruptions = [c for c in dict.fromkeys(table.corruption) if c != "clean"]
    columns = min(4, len(corruptions))
    rows = -(-len(corruptions) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(2.7 * columns + 1.6, 2.3 * rows), sharey=True, squeeze=False
    )
    approach = table.model.str.extract(r"^([^ ,]+)", expand=False)
    palette = approach_palette(approach)
    clean = table[table.corruption == "clean"].set_index("model")
    for ax, corruption in zip(axes.flat, corruptions, strict=False):
        for model in dict.fromkeys(table.model):
            rows_ = pd.concat(
                [
                    clean.loc[[model]].reset_index(),
                    table[(table.model == model) & (table.corruption == corruption)],
                ]
            ).sort_values("severity")
            ax.errorbar(
                rows_.severity,
                rows_.seq_acc,
                yerr=[rows_.seq_acc - rows_.seq_acc_low, rows_.seq_acc_high - rows_.seq_acc],
                capsize=2,
                marker="o",
                markersize=3,
                color=palette[approach[table.model == model].iloc[0]],
                linestyle="--" if ", pretrained" in model else ":" if "(" in model else "-",
                label=model,
            )
        ax.set_title(corruption.replace("_", " "), fontsize=10)
        ax.set_xticks(range(6))
        ax.set_xlabel("severity")
        accuracy_axis(ax)
    for ax in axes.flat[len(corruptions) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("sequence accuracy")
    side_legend(axes[0, -1])
    figure.tight_layout()
    return figure


def robustness(table: pd.DataFrame) -> Panel:
    return Panel(svg(robustness_figure(table)))
