"""The page's number formats (its template's filters): percentages, intervals, SI sizes."""

from __future__ import annotations

import pandas as pd


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.{digits}%}"


def spct(value: float | None, digits: int = 2) -> str:
    """A signed percentage: +1.25%."""
    return "—" if value is None or pd.isna(value) else f"{value:+.{digits}%}"


def num(value: float | None, digits: int = 1) -> str:
    """A number with thousands separators: 12,345.6."""
    return "—" if value is None or pd.isna(value) else f"{value:,.{digits}f}"


def interval(low: float | None, high: float | None, digits: int = 2) -> str:
    """A 95% interval as ``low–high`` in percent (empty when there is none)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f"{pct(low, digits)}–{pct(high, digits)}"


def si(value: float | None) -> str:
    """12_345_678 -> 12.3M."""
    if value is None or pd.isna(value):
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


FILTERS = {"pct": pct, "spct": spct, "num": num, "si": si, "interval": interval}
