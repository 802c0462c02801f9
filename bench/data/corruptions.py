"""Corrupted copies of test images for the robustness track: eight corruptions a captcha reader
meets, each at five severities, drawn by albumentations (here: the strike-through lines, and the
occluding block, which must land on the text where albumentations' dropout lands anywhere).
Each image is corrupted with a generator seeded by the corruption, the severity and the image's
file name, so every approach reads the same corrupted pixels on every machine; the copies are
cached as PNG files (``<cache>/corrupted/``) and decoded as each model was trained."""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from bench.paths import cache_dir

VERSION = 1  # changes with any definition below: results of another version are not reused
SEVERITIES = (1, 2, 3, 4, 5)

# per corruption, its parameter at severities 1-5 (ImageNet-C's scale where it has one)
LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),  # noise std, a share of 255
    "blur": (0.5, 1.0, 1.5, 2.0, 3.0),  # Gaussian sigma, pixels
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.1),  # contrast kept around the image's mean
    "elastic": (20, 40, 60, 90, 120),  # displacement field scale (albumentations' alpha, sigma 4)
    "rotation": (3, 6, 9, 12, 15),  # degrees, either way
    "lines": (1, 2, 3, 4, 5),  # dark strike-through lines across the text
    "occlusion": (0.04, 0.08, 0.12, 0.16, 0.2),  # a grey block's width, a share of the image's
}
CORRUPTIONS = tuple(LEVELS)
CLEAN = "clean"


def parse_corruptions(text: str | None) -> list[str]:
    """``a,b,...`` of :data:`CORRUPTIONS` (None: all)."""
    if text is None:
        return list(CORRUPTIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in LEVELS]
    if unknown or not names:
        raise ValueError(
            f"--corruptions {text}: {', '.join(unknown) or 'none given'}; choose from "
            + ", ".join(CORRUPTIONS)
        )
    return names


def parse_severities(text: str | None) -> list[int]:
    """``1,2,3`` or ``1-5`` (None: all five)."""
    if text is None:
        return list(SEVERITIES)
    low, sep, high = text.partition("-")
    try:
        values = list(range(int(low), int(high) + 1)) if sep else [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v not in SEVERITIES for v in values):
        raise ValueError(f"--severities {text}: give levels of 1-5, e.g. 1-5 or 1,3,5")
    return sorted(set(values))


def image_seed(corruption: str, severity: int, name: str) -> int:
    """The seed of one image's corruption: the same on every machine and in every process."""
    return zlib.crc32(f"{corruption}/{severity}/{name}".encode())


@cache
def _albumentation(corruption: str, severity: int) -> Callable[..., dict]:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network
    import albumentations as A
    import cv2

    level = LEVELS[corruption][severity - 1]
    transform = {
        "gaussian_noise": lambda: A.GaussNoise(std_range=(level, level), per_channel=False, p=1),
        "blur": lambda: A.GaussianBlur(blur_limit=0, sigma_limit=(level, level), p=1),
        "jpeg": lambda: A.ImageCompression(quality_range=(int(level), int(level)), p=1),
        "elastic": lambda: A.ElasticTransform(
            alpha=level, sigma=4, border_mode=cv2.BORDER_REPLICATE, p=1
        ),
        "rotation": lambda: A.OneOf(
            [
                A.Rotate(limit=(angle, angle), border_mode=cv2.BORDER_REPLICATE, p=1)
                for angle in (level, -level)
            ],
            p=1,
        ),
    }[corruption]()
    return A.Compose([transform], p=1)


def corrupt(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """``image`` (uint8 HxWx3) with ``corruption`` at ``severity`` (1-5), drawn from ``seed``."""
    if corruption not in LEVELS or severity not in SEVERITIES:
        raise ValueError(f"no corruption {corruption!r} at severity {severity}")
    level = LEVELS[corruption][severity - 1]
    if corruption == "contrast":  # ImageNet-C's: pixels pulled towards the image's mean
        mean = image.mean(axis=(0, 1), keepdims=True)
        return ((image - mean) * level + mean).clip(0, 255).astype(np.uint8)
    if corruption == "lines":
        return strike_through(image, int(level), np.random.default_rng(seed))
    if corruption == "occlusion":
        return occlude(image, level, np.random.default_rng(seed))
    transform = _albumentation(corruption, severity)
    transform.set_random_seed(seed)
    return transform(image=image)["image"]


def strike_through(image: np.ndarray, lines: int, rng: np.random.Generator) -> np.ndarray:
    """``lines`` dark lines, 2-3 pixels wide, each from the left quarter to the right quarter
    through the middle half of the height (where the text is), as captcha-v2's own stroke."""
    height, width = image.shape[:2]
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for _ in range(lines):
        start = (rng.uniform(0, 0.25) * width, rng.uniform(0.25, 0.75) * height)
        end = (rng.uniform(0.75, 1) * width, rng.uniform(0.25, 0.75) * height)
        shade = int(rng.integers(20, 80))
        draw.line([start, end], fill=(shade,) * 3, width=int(rng.integers(2, 4)))
    return np.asarray(canvas)


def occlude(image: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A mid-grey block ``share`` of the width wide and 60% of the height high, placed at random
    over the text (the middle 10-70% of the width: captcha-v2's text spans 10-69%)."""
    height, width = image.shape[:2]
    block = max(1, round(share * width))
    left = int(rng.integers(round(0.1 * width), max(round(0.7 * width) - block, 1) + 1))
    top = int(rng.integers(0, round(0.4 * height) + 1))
    out = image.copy()
    out[top : top + round(0.6 * height), left : left + block] = 128
    return out


def corrupted_folder(fingerprint: str, corruption: str, severity: int) -> Path:
    return cache_dir() / "corrupted" / f"v{VERSION}-{fingerprint[:16]}" / f"{corruption}-{severity}"


def corrupted_files(
    root: Path,
    files: Sequence[str],
    fingerprint: str,
    corruption: str,
    severity: int,
    progress: bool = False,
) -> list[Path]:
    """The corrupted copies of ``root/files`` (rendered into the cache on first use, atomically:
    a folder is complete or absent), in the order of ``files``."""
    folder = corrupted_folder(fingerprint, corruption, severity)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".corrupt-"))
        try:
            if folder.is_dir():  # a folder for other images of this dataset: add to it
                shutil.copytree(folder, tmp, dirs_exist_ok=True)
            label = f"corrupt {corruption} {severity}"
            for name in tqdm(missing, desc=label, leave=False, disable=not progress):
                with Image.open(root / name) as img:
                    rgb = np.asarray(img.convert("RGB"))
                out = corrupt(rgb, corruption, severity, image_seed(corruption, severity, name))
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(out).save(tmp / name, "PNG")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [folder / f for f in files]
