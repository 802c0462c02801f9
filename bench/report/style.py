"""How every figure of the report looks: one colour per approach whatever the figure shows
(:func:`approach_palette`), approaches listed in one order, accuracies and CERs in percent
(accuracy axes inside 0-100%), epochs and trials on integer ticks, log axes with a few plain
labels, legends beside the plot."""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.colors import to_hex
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    MaxNLocator,
    NullLocator,
    PercentFormatter,
)

sns.set_theme(style="whitegrid", context="notebook")
plt.rcParams["svg.fonttype"] = "none"  # text stays text: small files, selectable labels


# ------------------------------------------------------------------------------------ colours

BASE_COLOURS = [to_hex(c) for c in sns.color_palette("tab10", 10)]
MORE_COLOURS = [  # tab20b then tab20c, the darkest shade of each hue first
    to_hex(palette[i])
    for palette in (sns.color_palette("tab20b", 20), sns.color_palette("tab20c", 20))
    for shade in range(4)
    for i in range(shade, 20, 4)
]


@functools.cache
def registry_order() -> tuple[str, ...]:
    """The registered approaches in :func:`bench.approaches.list_approaches` order (imported on
    first use: this module stays cheap to import)."""
    try:
        from bench.approaches import list_approaches
    except Exception:  # a registry that fails to import still leaves the report its colours
        return ()
    return tuple(list_approaches())


def approach_colour(name: str) -> str:
    """One colour per approach name, whatever else a figure shows: the n-th registered approach
    gets tab10's n-th colour (then tab20b/tab20c's); a name unknown to the registry a colour of
    tab20b/tab20c picked by a checksum of the name."""
    order = registry_order()
    if name in order:
        i = order.index(name)
        return BASE_COLOURS[i] if i < len(BASE_COLOURS) else MORE_COLOURS[i - len(BASE_COLOURS)]
    return MORE_COLOURS[zlib.crc32(name.encode()) % len(MORE_COLOURS)]


def approach_palette(names: Iterable[str]) -> dict[str, str]:
    return {name: approach_colour(name) for name in dict.fromkeys(names)}


def approach_order(names: Iterable[str]) -> list[str]:
    """Registry order, then unknown names alphabetically (legends list approaches alike)."""
    order = registry_order()
    return sorted(
        dict.fromkeys(names), key=lambda n: (0, order.index(n), n) if n in order else (1, 0, n)
    )


# --------------------------------------------------------------------------------------- axes


def percent_axis(axis: matplotlib.axis.Axis) -> None:
    axis.set_major_formatter(PercentFormatter(1.0, decimals=None))


def accuracy_axis(ax: plt.Axes) -> None:
    """The y axis of ``ax`` in percent, its limits clamped to [0, 100%] (no margin below 0% or
    above 100%, where no accuracy or interval can be)."""
    percent_axis(ax.yaxis)
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0.0), min(high, 1.0))


def integer_axis(axis: matplotlib.axis.Axis) -> None:
    axis.set_major_locator(MaxNLocator(integer=True))


def compact(value: float) -> str:
    """A tick label: 0.2, 5, 300, 1.5k, 20M, 3G."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def log_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """At most ``most`` readable ticks inside ``[low, high]`` (both > 0) on a log axis: 1-2-5
    per decade, else 1-3, else powers of ten (every k-th when there are many decades), else
    (less than one step in range) a few plain linear ticks."""
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        ticks = [
            m * 10.0**e for e in range(lo, hi + 1) for m in mantissas if low <= m * 10.0**e <= high
        ]
        if 2 <= len(ticks) <= most:
            return ticks
    if len(ticks) > most:  # powers of ten only, and still too many: every k-th
        return ticks[:: math.ceil(len(ticks) / most)]
    linear = MaxNLocator(nbins=3).tick_values(low, high)
    return [float(t) for t in linear if low <= t <= high and t > 0] or [low, high]


def log_axis(ax: plt.Axes, which: str = "x") -> None:
    """Axis ``which`` of ``ax`` on a log scale with :func:`log_ticks` inside its current limits,
    no minor labels."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    low, high = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    if not (low > 0 and math.isfinite(high)):
        return
    axis.set_major_locator(FixedLocator(log_ticks(low, high)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))


def side_legend(ax: plt.Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
