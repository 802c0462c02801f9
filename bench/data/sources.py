"""Where labelled images come from: the sources' captcha-v2, synthetic renders, or any folder.

A :class:`Source` is a sorted list of image files with their labels, the charset they are written
in, and a content fingerprint (sha256 of the sorted ``name sha256`` lines).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import shutil
import stat
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

from tqdm.auto import tqdm

from bench.errors import DataError
from bench.paths import cache_dir, data_dirs

if TYPE_CHECKING:
    from PIL import Image


class DatasetMismatchWarning(UserWarning):
    """A dataset whose content differs from the published one."""


@dataclass
class Source:
    name: str
    root: Path
    files: list[Path]
    labels: list[str]
    charset: str
    fingerprint: str

    @property
    def max_len(self) -> int:
        return max(map(len, self.labels))


IGNORED_NAMES = {"labels.csv", "charset.txt"}


def file_listing(files: list[Path]) -> list[str]:
    """``name sha256`` lines, sorted, as the published fingerprints are made."""
    return sorted(f"{f.name} {hashlib.sha256(f.read_bytes()).hexdigest()}" for f in files)


def fingerprint(lines: list[str]) -> str:
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()


def check_labels(files: list[Path], labels: list[str], charset: str) -> None:
    for file, label in zip(files, labels, strict=True):
        if not label:
            raise DataError(f"{file}: empty label")
        if unknown := sorted(set(label) - set(charset)):
            raise DataError(
                f"{file}: label {label!r} has characters {''.join(unknown)!r} outside the "
                f"charset {charset!r}"
            )


# ---------------------------------------------------------------------------------------- folder


def folder_source(path: str | Path, name: str | None = None, charset: str | None = None) -> Source:
    """Images in ``path`` labelled by file stem, or by ``labels.csv`` (columns ``file,label``).

    The charset is ``charset``, else the content of ``charset.txt`` in the folder, else the sorted
    characters of all labels.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    labels_csv = root / "labels.csv"
    if labels_csv.exists():
        files, labels = _read_labels_csv(labels_csv)
    else:
        files = sorted(
            p
            for p in root.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name not in IGNORED_NAMES
        )
        labels = [p.stem for p in files]
    if not files:
        raise DataError(f"{root}: no images found (expected files named <label>.png or labels.csv)")
    if charset is None and (root / "charset.txt").exists():
        charset = (root / "charset.txt").read_text().strip()
    charset = charset or "".join(sorted(set("".join(labels))))
    check_labels(files, labels, charset)
    listing = file_listing(files + ([labels_csv] if labels_csv.exists() else []))
    return Source(name or f"folder:{root}", root, files, labels, charset, fingerprint(listing))


def _read_labels_csv(path: Path) -> tuple[list[Path], list[str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected a header with columns 'file' and 'label'")
        rows = sorted((row["file"], row["label"]) for row in reader)
    for file, _ in rows:
        if not (path.parent / file).is_file():
            raise DataError(f"{path}: lists {file!r}, which is not a file in {path.parent}")
    return [path.parent / f for f, _ in rows], [label for _, label in rows]


# ------------------------------------------------------------------------------------ captcha-v2

CAPTCHA_V2_URL = (
    "https://github.com/AakashKumarNain/CaptchaCracker/raw/master/captcha_images_v2.zip"
)
CAPTCHA_V2_FOLDER = "captcha_images_v2"
CAPTCHA_V2_CHARSET = "2345678bcdefgmnpwxy"
CAPTCHA_V2_LISTING = Path(__file__).with_name("captcha_images_v2.sha256")
MAX_ARCHIVE_MEMBERS = 100_000
MAX_ARCHIVE_BYTES = 1 << 30


def captcha_v2_source(data_dir: str | Path | None = None, download: bool = True) -> Source:
    """The sources' dataset, from ``data_dir``, ``$BENCH_DATA_DIR`` or the cache, else downloaded
    (unless ``$BENCH_OFFLINE`` is set)."""
    searched = data_dirs(data_dir)
    for base in searched:
        for candidate in (base / CAPTCHA_V2_FOLDER, base):
            if candidate.name == CAPTCHA_V2_FOLDER and candidate.is_dir():
                return _checked_captcha_v2(candidate)
    if not download or os.environ.get("BENCH_OFFLINE"):
        raise DataError(_captcha_v2_help(searched))
    target = cache_dir()
    try:
        download_and_extract(CAPTCHA_V2_URL, target)
    except OSError as err:
        raise DataError(
            f"download of captcha-v2 failed ({err}). {_captcha_v2_help(searched)}"
        ) from err
    return _checked_captcha_v2(target / CAPTCHA_V2_FOLDER)


def _captcha_v2_help(searched: list[Path]) -> str:
    where = ", ".join(str(d) for d in searched)
    return (
        f"captcha-v2 not found in {where}. Put the folder {CAPTCHA_V2_FOLDER}/ (1040 PNGs from "
        f"{CAPTCHA_V2_URL}) into one of them, or pass --data-dir / set BENCH_DATA_DIR."
    )


def _checked_captcha_v2(folder: Path) -> Source:
    source = folder_source(folder, name="captcha-v2", charset=CAPTCHA_V2_CHARSET)
    known = CAPTCHA_V2_LISTING.read_text().splitlines()
    if source.fingerprint != fingerprint(known):
        warnings.warn(
            describe_mismatch(folder, file_listing(source.files), known),
            DatasetMismatchWarning,
            stacklevel=2,
        )
    return source


def describe_mismatch(folder: Path, actual: list[str], known: list[str]) -> str:
    """Say which files are missing, extra or changed compared with the known listing."""
    have = dict(line.split(" ", 1) for line in actual)
    want = dict(line.split(" ", 1) for line in known)
    parts = []
    for what, names in (
        ("missing", sorted(want.keys() - have.keys())),
        ("extra", sorted(have.keys() - want.keys())),
        ("changed", sorted(n for n in want.keys() & have.keys() if want[n] != have[n])),
    ):
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            parts.append(f"{len(names)} {what} ({shown})")
    return (
        f"captcha-v2 in {folder} differs from the published dataset "
        f"(fingerprint {fingerprint(actual)[:12]}, expected {fingerprint(known)[:12]}): "
        + "; ".join(parts)
    )


def download_and_extract(url: str, target: Path) -> None:
    """Download a zip and extract it into ``target`` safely (see :func:`safe_extract`)."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        archive = Path(tmp) / "archive.zip"
        with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out)
        safe_extract(archive, Path(tmp) / "out")
        for item in (Path(tmp) / "out").iterdir():
            if not (target / item.name).exists():
                item.rename(target / item.name)


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a zip, refusing links, members outside ``target`` and oversized content."""
    target = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise DataError(f"{archive}: {len(members)} members, more than {MAX_ARCHIVE_MEMBERS}")
        if sum(m.file_size for m in members) > MAX_ARCHIVE_BYTES:
            raise DataError(f"{archive}: unpacks to more than {MAX_ARCHIVE_BYTES} bytes")
        for member in members:
            dest = (target / member.filename).resolve()
            if not dest.is_relative_to(target) or member.filename.startswith(("/", "\\")):
                raise DataError(
                    f"{archive}: member {member.filename!r} would land outside {target}"
                )
            if stat.S_ISLNK(member.external_attr >> 16):
                raise DataError(f"{archive}: member {member.filename!r} is a link")
            if member.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, dest.open("wb") as out:
                # copy at most the declared size + 1 byte: a lying header cannot unpack a bomb
                data = src.read(member.file_size + 1)
                if len(data) > member.file_size:
                    raise DataError(
                        f"{archive}: member {member.filename!r} is larger than declared"
                    )
                out.write(data)


# ------------------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class SyntheticSpec:
    """Rendered captchas, the same spec the same images: ``style`` ``captcha`` draws with the
    ``captcha`` package's ImageCaptcha, ``v2`` with :mod:`bench.data.lookalike` (captcha-v2's
    look)."""

    charset: str = "0123456789"
    min_len: int = 4
    max_len: int = 4
    width: int = 160
    height: int = 60
    count: int = 10_000
    seed: int = 0
    unique: bool = False  # draw labels without replacement (all 10,000 for source 003's preset)
    style: str = "captcha"

    def key(self) -> str:
        fields = asdict(self)
        if self.style == "captcha":  # the key of the sets rendered before styles existed
            del fields["style"]
        return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()[:16]


SYNTHETIC_PRESETS = {
    # source 003: every four-digit string once, ImageCaptcha's default 160x60
    "digits4": SyntheticSpec(unique=True),
    # the harder set of the `full` suite: 4 to 7 digits and lowercase letters, captcha-v2's size
    "alnum4to7": SyntheticSpec(
        charset="0123456789abcdefghijklmnopqrstuvwxyz", min_len=4, max_len=7, width=200, height=50
    ),
    # captcha-v2's look: its 19 characters, five to an image, 200x50 (bench.data.lookalike)
    "v2style": SyntheticSpec(
        charset=CAPTCHA_V2_CHARSET, min_len=5, max_len=5, width=200, height=50, style="v2"
    ),
    # small and quick, for tests and smoke runs
    "tiny": SyntheticSpec(
        charset="0123456789", min_len=3, max_len=3, width=96, height=32, count=400
    ),
}


STYLES = ("captcha", "v2")


def parse_synthetic(spec: str) -> SyntheticSpec:
    """``digits4`` or ``digits4,count=500`` or ``charset=abc,min_len=2,max_len=3,...``."""
    fields = {f: type(v) for f, v in asdict(SyntheticSpec()).items()}
    base, overrides = SyntheticSpec(), {}
    for part in filter(None, spec.split(",")):
        if "=" not in part:
            if part not in SYNTHETIC_PRESETS:
                raise DataError(
                    f"unknown synthetic preset {part!r}; presets: {', '.join(SYNTHETIC_PRESETS)}"
                )
            base = SYNTHETIC_PRESETS[part]
            continue
        key, value = part.split("=", 1)
        if key == "length":
            overrides["min_len"] = overrides["max_len"] = int(value)
        elif key not in fields:
            raise DataError(
                f"unknown synthetic parameter {key!r}; known: length, {', '.join(fields)}"
            )
        elif fields[key] is bool:
            overrides[key] = value.lower() in ("1", "true", "yes")
        else:
            overrides[key] = fields[key](value)
    result = SyntheticSpec(**{**asdict(base), **overrides})
    if result.style not in STYLES:
        raise DataError(f"unknown synthetic style {result.style!r}; styles: {', '.join(STYLES)}")
    if not 1 <= result.min_len <= result.max_len:
        raise DataError(f"synthetic lengths must satisfy 1 <= min_len <= max_len, got {spec!r}")
    if result.unique and result.count > _label_space(result):
        raise DataError(
            f"synthetic {spec!r}: {result.count} unique labels asked, only "
            f"{_label_space(result)} exist"
        )
    return result


def _label_space(spec: SyntheticSpec) -> int:
    return sum(len(spec.charset) ** n for n in range(spec.min_len, spec.max_len + 1))


def synthetic_labels(spec: SyntheticSpec) -> list[str]:
    rng = random.Random(spec.seed)
    k = len(spec.charset)

    def spell(number: int) -> str:
        for n in range(spec.min_len, spec.max_len + 1):
            if number < k**n:
                return "".join(spec.charset[(number // k**i) % k] for i in reversed(range(n)))
            number -= k**n
        raise AssertionError(number)

    if spec.unique:
        return [spell(i) for i in rng.sample(range(_label_space(spec)), spec.count)]
    return [
        "".join(rng.choices(spec.charset, k=rng.randint(spec.min_len, spec.max_len)))
        for _ in range(spec.count)
    ]


def synthetic_source(spec: SyntheticSpec | str, name: str | None = None) -> Source:
    """Render (once; cached under the cache folder) and return a synthetic dataset."""

    spec = parse_synthetic(spec) if isinstance(spec, str) else spec
    folder = cache_dir() / "synthetic" / spec.key()
    if not (folder / "labels.csv").exists():
        _render(spec, folder)
    return folder_source(folder, name=name or f"synthetic:{spec.key()}", charset=spec.charset)


def _renderer(spec: SyntheticSpec) -> Callable[[str, str], Image.Image]:
    """``draw(label, seed)``: one image, the same for the same seed."""
    if spec.style == "v2":
        from bench.data import lookalike

        return lambda label, seed: lookalike.render(
            label, random.Random(seed), spec.width, spec.height
        )
    import captcha.image

    # ImageCaptcha's font sizes suit its 60-pixel default height; scale them to keep text in frame
    fonts = tuple(round(size * spec.height / 60) for size in (42, 50, 56))
    generator = captcha.image.ImageCaptcha(width=spec.width, height=spec.height, font_sizes=fonts)

    def draw(label: str, seed: str) -> Image.Image:
        random.seed(seed)  # captcha < 0.7 draws from the global generator, 0.7 from secrets
        with mock.patch.object(captcha.image, "secrets", SeededSecrets(random.Random(seed))):
            return generator.generate_image(label)

    return draw


class SeededSecrets:
    """The three calls of :mod:`secrets` that ImageCaptcha makes, drawn from a seeded generator,
    so that a synthetic spec renders the same images on every machine."""

    def __init__(self, rng: random.Random):
        self.randbelow = rng.randrange
        self.randbits = rng.getrandbits
        self.choice = rng.choice


def _render(spec: SyntheticSpec, folder: Path) -> None:
    """Render into a temporary folder beside ``folder`` and move it in place when complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".render-"))
    labels = synthetic_labels(spec)
    draw = _renderer(spec)
    state = random.getstate()  # ImageCaptcha reseeds the global generator
    try:
        for i, label in enumerate(tqdm(labels, desc="render synthetic", leave=False)):
            draw(label, f"{spec.seed}:{i}").save(tmp / f"{i:06d}.png", "PNG")
        with (tmp / "labels.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "label"])
            writer.writerows((f"{i:06d}.png", label) for i, label in enumerate(labels))
        (tmp / "charset.txt").write_text(spec.charset)
        if not folder.exists():  # else another process finished first
            tmp.rename(folder)
    finally:
        random.setstate(state)
        shutil.rmtree(tmp, ignore_errors=True)
