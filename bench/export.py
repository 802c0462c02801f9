"""ONNX export of a trained recognizer: uint8 images ``(N, C, H, W)`` in (any batch size), logits
out; the decoding stays in the project's codec. The file carries the model's ``bench.json``
metadata, so :class:`OnnxReader` reads images with it alone (onnxruntime, no torch model)."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.hparams import TrainConfig
from bench.recognizer import Recognizer, codec_from_metadata

METADATA_KEY = "captcha_bench"  # the ONNX metadata entry holding bench.json


def export_onnx(recognizer: Recognizer, meta: dict[str, Any], path: Path) -> Path:
    """Write ``recognizer`` to ``path`` as ONNX (PyTorch's dynamo exporter, a dynamic batch
    axis) with ``meta`` in its metadata."""
    import onnx

    cfg = TrainConfig.from_hparams(meta["hparams"])
    example = torch.zeros((2, cfg.channels, cfg.height, cfg.width), dtype=torch.uint8)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's progress lines and notices
        program = torch.onnx.export(
            recognizer.cpu().eval(),
            (example,),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
            dynamo=True,
        )
    model = program.model_proto
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


class OnnxReader:
    """An exported model read with onnxruntime on the CPU: ``predict`` takes uint8 images and
    returns strings, as the logged MLflow model does."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (every core)
        options.log_severity_level = 3  # its own warnings off the console
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ValueError(f"{path}: not an ONNX model exported by captcha-bench")
        self.meta: dict[str, Any] = json.loads(props[METADATA_KEY])
        self.codec = codec_from_metadata(self.meta)

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": np.ascontiguousarray(images, np.uint8)})[0]

    def predict(self, images: np.ndarray) -> list[str]:
        return self.codec.decode(torch.from_numpy(self.logits(images)))


@dataclass(frozen=True)
class Parity:
    """PyTorch and onnxruntime on the same images: how many read the same strings, and the
    largest absolute difference between their logits."""

    images: int
    same: int
    max_abs_diff: float

    @property
    def share(self) -> float:
        return self.same / self.images if self.images else float("nan")


def check_parity(
    recognizer: Recognizer, reader: OnnxReader, images: np.ndarray, batch: int = 64
) -> Parity:
    """Read ``images`` with both; strings decoded by the same codec."""
    same, largest = 0, 0.0
    recognizer = recognizer.cpu().eval()
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        with torch.no_grad():
            expected = recognizer(torch.from_numpy(chunk)).float()
        got = torch.from_numpy(reader.logits(chunk)).float()
        largest = max(largest, float((got - expected).abs().max()))
        pairs = zip(reader.codec.decode(expected), reader.codec.decode(got), strict=True)
        same += sum(a == b for a, b in pairs)
    return Parity(images=len(images), same=same, max_abs_diff=largest)
