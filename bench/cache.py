"""The cache folder: what it holds (``bench cache``) and pruning it (``bench cache prune``).

``checkpoints/`` holds per-epoch training state named ``<approach>-<code digest>-<run key>.pt``;
a checkpoint is *stale* when its approach's code has changed since (its digest differs from
today's) or the approach no longer exists: no run can reuse it. ``stores/`` holds decoded
datasets, ``synthetic/`` rendered ones, ``corrupted/`` the robustness track's corrupted test
images; anything else is a downloaded dataset.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.paths import cache_dir

KINDS = ("checkpoints", "stores", "synthetic", "corrupted")


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str  # checkpoints | stores | synthetic | corrupted | datasets
    bytes: int
    stale: bool = False


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def is_stale(checkpoint: Path) -> bool:
    """A checkpoint of changed code, of an unknown approach, or an unfinished write (``.tmp``)."""
    from bench.approaches import list_approaches
    from bench.spec import code_digest

    if checkpoint.suffix != ".pt":
        return True
    for approach in list_approaches():
        rest = checkpoint.stem.removeprefix(f"{approach}-")
        if rest != checkpoint.stem and rest.count("-") == 1:
            return rest.split("-")[0] != code_digest(approach)
    return True


def entries(root: Path | None = None) -> list[Entry]:
    """Everything in the cache: each checkpoint, store and rendered set, each other folder."""
    root = root or cache_dir()
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if child.name == "checkpoints" and child.is_dir():
            found += [
                Entry(p, "checkpoints", size(p), is_stale(p)) for p in sorted(child.iterdir())
            ]
        elif child.name in KINDS and child.is_dir():
            found += [Entry(p, child.name, size(p)) for p in sorted(child.iterdir())]
        else:
            found.append(Entry(child, "datasets", size(child)))
    return found


def summary(found: list[Entry]) -> list[tuple[str, int, int, int]]:
    """Per kind: entries, bytes, stale entries."""
    kinds = sorted({e.kind for e in found})
    return [
        (
            kind,
            sum(e.kind == kind for e in found),
            sum(e.bytes for e in found if e.kind == kind),
            sum(e.stale for e in found if e.kind == kind),
        )
        for kind in kinds
    ]


def prune(everything: bool = False, root: Path | None = None) -> tuple[int, int]:
    """Remove stale checkpoints, or with ``everything`` every checkpoint, decoded store and
    rendered set (downloaded datasets stay); returns (entries, bytes) removed."""
    removed = freed = 0
    for entry in entries(root):
        if entry.stale or (everything and entry.kind != "datasets"):
            if entry.path.is_dir():
                shutil.rmtree(entry.path)
            else:
                entry.path.unlink()
            removed, freed = removed + 1, freed + entry.bytes
    return removed, freed


def human(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
