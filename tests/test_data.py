import csv
import io
import itertools
import math
import shutil
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import DataError, DatasetMismatchWarning, load_dataset
from bench.data.sources import (
    CAPTCHA_V2_CHARSET,
    captcha_v2_source,
    folder_source,
    parse_synthetic,
    safe_extract,
    synthetic_labels,
    synthetic_source,
)
from bench.data.store import decode_source, make_split
from tests.conftest import write_images

KNOWN_FINGERPRINT = "a31512519e2928fe51fc5cf91de2bc3b2e8e8367f80389b8cc4c34b4a3c13fcf"


# ----------------------------------------------------------------------------------- captcha-v2


def test_captcha_v2_through_bench_data_dir(captcha_v2_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetMismatchWarning)
        source = captcha_v2_source()
    assert source.fingerprint == KNOWN_FINGERPRINT
    assert len(source.files) == 1040 and source.charset == CAPTCHA_V2_CHARSET
    assert all(len(label) == 5 for label in source.labels)
    assert sum(any(a == b for a, b in itertools.pairwise(t)) for t in source.labels) == 217


def test_captcha_v2_mismatch_warns_what_differs(captcha_v2_root, tmp_path):
    copy = tmp_path / "captcha_images_v2"
    shutil.copytree(captcha_v2_root, copy)
    (copy / "226md.png").unlink()
    shutil.copy(copy / "22d5n.png", copy / "2222b.png")
    (copy / "2356g.png").write_bytes((copy / "2356g.png").read_bytes() + b"\0")
    with pytest.warns(DatasetMismatchWarning) as record:
        source = captcha_v2_source(data_dir=tmp_path)
    message = str(record[0].message)
    assert "1 missing (226md.png)" in message
    assert "1 extra (2222b.png)" in message
    assert "1 changed (2356g.png)" in message
    assert source.fingerprint != KNOWN_FINGERPRINT


def test_captcha_v2_absent_without_download_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="captcha-v2 not found.*BENCH_DATA_DIR"):
        captcha_v2_source(download=False)


def test_split_is_the_same_for_every_input_size(captcha_v2_root):
    dataset = load_dataset("captcha-v2")
    small, big = dataset.store(1, 32, 100), dataset.store(3, 50, 200)
    assert small.images.shape == (1040, 1, 32, 100) and big.images.dtype == torch.uint8
    a, b = dataset.split(small), dataset.split(big)
    assert all(
        torch.equal(x, y)
        for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test), strict=True)
    )
    assert a.sizes() == {"train": 728, "val": 104, "test": 208}
    assert dataset.describe(small, a)["split_digest"] == dataset.describe(big, b)["split_digest"]


# ----------------------------------------------------------------------------------------- split


def test_split_is_deterministic_disjoint_and_complete():
    files = [f"{i:04d}.png" for i in range(100)]
    split = make_split(files, seed=3)
    parts = [set(p.tolist()) for p in (split.train, split.val, split.test)]
    assert sum(map(len, parts)) == 100 and set().union(*parts) == set(range(100))
    assert len(split.test) == 20 and len(split.val) == 10
    again = make_split(list(reversed(files)), seed=3)  # same names in another order
    assert {files[i] for i in split.test.tolist()} == {
        list(reversed(files))[i] for i in again.test.tolist()
    }
    assert not torch.equal(make_split(files, seed=4).test, split.test)
    with pytest.raises(DataError, match="too few"):
        make_split(files[:2], seed=0)


# ------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_cached(bench_cache, monkeypatch, tmp_path):
    first = synthetic_source("tiny,count=30,seed=5")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))  # rendered again, on its own
    second = synthetic_source("tiny,count=30,seed=5")
    assert first.fingerprint == second.fingerprint and first.labels == second.labels
    monkeypatch.setenv("BENCH_CACHE_DIR", str(bench_cache))
    assert len(first.files) == 30 and all(len(t) == 3 and t.isdigit() for t in first.labels)

    import captcha.image

    monkeypatch.setattr(
        captcha.image.ImageCaptcha,
        "generate_image",
        lambda *a, **k: pytest.fail("re-rendered a cached dataset"),
    )
    assert synthetic_source("tiny,count=30,seed=5").fingerprint == first.fingerprint


def test_synthetic_labels_follow_the_spec():
    spec = parse_synthetic("charset=ab,min_len=2,max_len=4,count=200,seed=1")
    labels = synthetic_labels(spec)
    assert {len(t) for t in labels} == {2, 3, 4} and set("".join(labels)) == {"a", "b"}
    assert labels == synthetic_labels(spec)
    assert labels != synthetic_labels(parse_synthetic("charset=ab,min_len=2,max_len=4,count=200"))
    seed_003 = parse_synthetic("digits4")
    assert (seed_003.width, seed_003.height, seed_003.count) == (160, 60, 10_000)
    every = synthetic_labels(parse_synthetic("digits4"))
    assert len(set(every)) == 10_000 and {len(t) for t in every} == {4}


def test_v2style_renders_captcha_v2s_layout_the_same_for_the_same_seed(monkeypatch, tmp_path):
    spec = parse_synthetic("v2style,count=40,seed=3")
    assert (spec.width, spec.height, spec.min_len, spec.max_len) == (200, 50, 5, 5)
    first = synthetic_source("v2style,count=40,seed=3")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))  # rendered again, on its own
    again = synthetic_source("v2style,count=40,seed=3")
    other = synthetic_source("v2style,count=40,seed=4")
    assert first.fingerprint == again.fingerprint != other.fingerprint
    assert set("".join(first.labels)) <= set(CAPTCHA_V2_CHARSET)
    images = np.stack([np.asarray(Image.open(f).convert("L")) for f in first.files])
    assert images.shape == (40, 50, 200)
    # the measured layout of captcha-v2: ink between x 10 and 190, none in the outer columns;
    # the background light grey getting lighter to the right
    dark = images < 100
    assert dark[:, :, :5].mean() < 0.01 and dark[:, :, 195:].mean() < 0.01
    assert 0.12 < dark.mean() < 0.25
    light = np.percentile(images, 90, axis=1).mean(0)
    assert 185 < light[:20].mean() < 215 and light[-20:].mean() > 235


def test_a_new_synthetic_style_keeps_the_earlier_sets_keys():
    # the caches and checkpoints of sets rendered before styles existed stay valid
    assert parse_synthetic("tiny").key() == "3465eb168e21717a"
    assert parse_synthetic("tiny,style=v2").key() != parse_synthetic("tiny").key()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nope", "unknown synthetic preset 'nope'"),
        ("tiny,colour=red", "unknown synthetic parameter 'colour'"),
        ("tiny,min_len=5,max_len=3", "min_len <= max_len"),
        ("tiny,style=comic", "unknown synthetic style 'comic'; styles: captcha, v2"),
        ("charset=01,length=2,count=5,unique=true", "4 exist"),
    ],
)
def test_bad_synthetic_specs_are_named(spec, message):
    with pytest.raises(DataError, match=message):
        parse_synthetic(spec)


# ---------------------------------------------------------------------------------------- folder


def test_folder_by_stem_and_by_labels_csv(tmp_path):
    write_images(tmp_path / "stems", ["ab1", "ba2", "12"])
    source = load_dataset(f"folder:{tmp_path / 'stems'}").source
    assert source.labels == ["12", "ab1", "ba2"] and source.charset == "12ab"
    assert source.max_len == 3

    listed = tmp_path / "listed"
    write_images(listed, ["x", "y"])
    with (listed / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "label"], ["x.png", "hello"], ["y.png", "world"]])
    assert folder_source(listed).labels == ["hello", "world"]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images found"):
        folder_source(tmp_path / "empty")
    with pytest.raises(DataError, match="not a folder"):
        folder_source(tmp_path / "missing")


def test_label_outside_the_charset_names_the_file(tmp_path):
    write_images(tmp_path, ["abc", "abz"])
    (tmp_path / "charset.txt").write_text("abc")
    with pytest.raises(DataError, match=r"abz\.png: label 'abz' has characters 'z' outside"):
        folder_source(tmp_path)


def test_labels_csv_naming_a_missing_file(tmp_path):
    write_images(tmp_path, ["a"])
    (tmp_path / "labels.csv").write_text("file,label\na.png,a\nb.png,b\n")
    with pytest.raises(DataError, match="lists 'b.png', which is not a file"):
        folder_source(tmp_path)


def make_bad_file(folder: Path, kind: str) -> Path:
    path = folder / f"bad{kind[0]}.png"
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 40, 3), np.uint8)).save(
        noise, "PNG"
    )
    png = noise.getvalue()
    middle = len(png) // 2
    data = {
        "zero-byte": b"",
        "truncated": png[:middle],
        "non-image": b"this is a text file, not a picture\n",
        "corrupt": png[:middle]
        + bytes(b ^ 0xFF for b in png[middle : middle + 64])
        + png[middle + 64 :],
    }[kind]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("zero-byte", "empty file"),
        ("truncated", "corrupt or truncated"),
        ("non-image", "not an image"),
        ("corrupt", "corrupt or truncated"),
    ],
)
def test_bad_images_are_named_or_skipped_and_listed(tmp_path, kind, reason):
    write_images(tmp_path, ["aa", "ab", "ba"])
    bad = make_bad_file(tmp_path, kind)
    source = folder_source(tmp_path)
    with pytest.raises(DataError, match=rf"{bad.name}: {reason}"):
        decode_source(source, 1, 16, 40)
    store = decode_source(source, 1, 16, 40, skip_bad=True)
    assert len(store) == 3 and bad.name not in store.files
    assert [name for name, _ in store.skipped] == [bad.name]


def test_an_image_over_the_pixel_limit_is_named_or_skipped(tmp_path, monkeypatch):
    """A decompression bomb (over twice PIL's pixel limit) is an error naming its file."""
    write_images(tmp_path, ["aa", "ab"])
    write_images(tmp_path, ["bb"], size=(400, 300))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # the 120,000-pixel one is a bomb
    source = folder_source(tmp_path)
    with pytest.raises(DataError, match=r"bb.png: too many pixels"):
        decode_source(source, 1, 16, 40)
    store = decode_source(source, 1, 16, 40, skip_bad=True)
    assert store.files == ["aa.png", "ab.png"] and store.skipped[0][0] == "bb.png"


def test_store_is_cached_on_disk(tmp_path, bench_cache):
    write_images(tmp_path, ["aa", "ab", "ba"])
    source = folder_source(tmp_path)
    first = decode_source(source, 3, 10, 30)
    (tmp_path / "aa.png").unlink()  # the cache, keyed by fingerprint, no longer reads files
    second = decode_source(source, 3, 10, 30)
    assert torch.equal(first.images, second.images) and first.images.shape == (3, 3, 10, 30)


# ------------------------------------------------------------------------------ archive safety


def make_zip(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_safe_extract_unpacks_a_normal_archive(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", {"captcha_images_v2/abcde.png": b"x" * 10})
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "captcha_images_v2" / "abcde.png").read_bytes() == b"x" * 10


@pytest.mark.parametrize(
    "members, link, message",
    [
        ({"../evil.png": b"x"}, None, "outside"),
        ({"/abs/evil.png": b"x"}, None, "outside"),
        ({"a/../../evil.png": b"x"}, None, "outside"),
        ({"ok.png": b"x"}, "captcha_images_v2/link.png", "is a link"),
    ],
)
def test_safe_extract_refuses_escapes_and_links(tmp_path, members, link, message):
    archive = make_zip(tmp_path / "bad.zip", members, link)
    with pytest.raises(DataError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists()


def test_safe_extract_bounds_the_unpacked_size(tmp_path, monkeypatch):
    import bench.data.sources as sources

    monkeypatch.setattr(sources, "MAX_ARCHIVE_BYTES", 100)
    archive = make_zip(tmp_path / "bomb.zip", {"a.png": b"\0" * 1000})
    with pytest.raises(DataError, match="unpacks to more than 100 bytes"):
        safe_extract(archive, tmp_path / "out")


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


def test_missing_captcha_v2_is_downloaded_extracted_and_cached(tmp_path, monkeypatch):
    """The download path end to end, from a local URL: nothing leaves this machine."""
    import bench.data.sources as sources

    folder = tmp_path / "zip-src" / "captcha_images_v2"
    write_images(folder, ["abcde", "bcdef"])
    archive = tmp_path / "captcha_images_v2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"captcha_images_v2/{path.name}")
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(sources, "CAPTCHA_V2_URL", archive.as_uri())
    monkeypatch.setattr(sources, "CAPTCHA_V2_CHARSET", "abcdef")
    with pytest.warns(DatasetMismatchWarning, match="1040 missing"):
        source = captcha_v2_source()
    assert source.labels == ["abcde", "bcdef"]
    assert (cache / "captcha_images_v2" / "abcde.png").is_file()
    archive.unlink()  # the second use reads the cache
    with pytest.warns(DatasetMismatchWarning):
        assert captcha_v2_source().labels == ["abcde", "bcdef"]


def test_source_split_holds_out_its_share_and_validates_on_it():
    from bench.spec import make_spec
    from bench.training import build_trainer

    dataset = load_dataset("synthetic:tiny,count=200")
    store = dataset.store(1, 32, 96)
    split = dataset.split(store, "source", holdout=0.1)
    assert split.sizes() == {"train": 180, "val": 20, "test": 20}
    assert split.val.equal(split.test)
    benchmark = dataset.split(store)
    assert benchmark.sizes() == {"train": 140, "val": 20, "test": 40}
    spec = make_spec("crnn", dataset, {"epochs": 1, "split": "source", "width": 96})
    run = build_trainer(spec, dataset)
    assert run.data["n_train"] == 200 - round(200 * 250 / 1070)  # source 001's CRNN: 820/250
    assert run.split.val.equal(run.split.test)


def test_source_001_decoding_order_resizes_before_converting():
    """``Image.open(p).resize((W, 32)).convert('L')`` (PIL's default filter) is its own store."""
    from bench.approaches import get_approach
    from bench.hparams import TrainConfig

    dataset = load_dataset("synthetic:tiny,count=60")
    ours = dataset.store(1, 32, 100)
    theirs = dataset.store(1, 32, 100, "resize-convert")
    assert ours.images.shape == theirs.images.shape == (60, 1, 32, 100)
    difference = (ours.images.float() - theirs.images.float()).abs()
    assert 0 < difference.mean() < 10  # the same pictures, other pixels
    path = dataset.source.files[0]
    with Image.open(path) as img:
        expected = np.array(img.resize((100, 32)).convert("L"))
    assert np.array_equal(theirs.images[0, 0].numpy(), expected)
    assert TrainConfig.from_hparams(get_approach("crnn").defaults).decode == "resize-convert"
    with pytest.raises(ValueError, match="decode='other' is out of range"):
        get_approach("crnn").resolve({"decode": "other"})


def test_augmentation_follows_fastais_laws():
    """Brightness shifts each image in logit space, contrast scales it; nothing else moves."""
    from bench.data import Augment

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 16).clamp(0.05, 0.95)
    assert torch.equal(Augment()(x, generator), x)

    def logit_change(augment, op):
        out = augment(x, generator)
        return op(torch.logit(out, 1e-7), torch.logit(x, 1e-7)).flatten(1)

    shift = logit_change(Augment(brightness=0.5, p_lighting=1.0), torch.sub)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-3)
    assert shift[:, 0].abs().min() > 0 and shift[:, 0].abs().max() < math.log(3) + 1e-3
    scale = logit_change(Augment(contrast=0.5, p_lighting=1.0), torch.div)
    assert torch.allclose(scale, scale[:, :1].expand_as(scale), atol=1e-3)
    assert scale.min() >= 0.5 - 1e-3 and scale.max() <= 2 + 1e-3
    flipped = Augment(rotate=180.0, p_rotate=1.0)
    angle_one = flipped(torch.arange(8.0).view(1, 1, 2, 4) / 8, torch.Generator().manual_seed(1))
    assert angle_one.shape == (1, 1, 2, 4) and 0 <= angle_one.min() <= angle_one.max() <= 1
