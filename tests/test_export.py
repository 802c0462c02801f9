"""ONNX export: a CE and a CTC approach exported from their MLflow runs, read by onnxruntime as
PyTorch reads them, logged to the run, and read back by `bench predict`."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from bench.cli import main
from bench.data import load_dataset
from bench.export import OnnxReader, check_parity, export_onnx
from bench.recognizer import decode_images, package
from bench.tracking.models import logged_weights
from tests.conftest import fit, fit_tracked

TINY = "synthetic:tiny,count=60"


@pytest.mark.parametrize(
    "approach, settings",
    [("ce-crnn", {"epochs": 1, "hidden": 16}), ("crnn-modified", {"epochs": 1, "hidden": 16})],
    ids=["ce", "ctc"],
)
def test_export_reads_as_pytorch_does_and_is_logged_to_the_run(
    approach, settings, tmp_path, mlflow_store, capsys
):
    dataset = load_dataset(TINY)
    _, run_id = fit_tracked(approach, dataset, settings, progress=False)
    out = tmp_path / "model.onnx"
    assert main(["export", "--run", run_id, "--out", str(out)]) in (None, 0)
    said = capsys.readouterr().out
    assert "read the same string for 12 of 12 test images (100.00%)" in said  # 60: 12 test

    client = mlflow.MlflowClient(mlflow_store)
    assert [a.path for a in client.list_artifacts(run_id, "export")] == ["export/model.onnx"]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["onnx/onnx_parity"] == 1.0 and metrics["onnx/onnx_max_abs_logit_diff"] < 1e-3

    # onnxruntime on another batch size than the export's example, and `bench predict`
    files = dataset.source.files[:3]
    reader = OnnxReader(out)
    logged = logged_weights(run_id)
    images = decode_images(logged.meta, files)
    with torch.no_grad():
        expected = reader.codec.decode(logged.recognizer()(torch.from_numpy(images)).float())
    assert reader.predict(images) == expected
    assert main(["predict", "--model", str(out), *map(str, files)]) in (None, 0)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == expected


def test_parity_counts_images_read_differently(tmp_path):
    dataset = load_dataset(TINY)
    result = fit("crnn-modified", dataset, {"epochs": 1, "hidden": 16}, progress=False)
    recognizer, meta = package(result.model, result.approach, result.codec, result.hparams)
    path = export_onnx(recognizer, meta, tmp_path / "m.onnx")
    images = decode_images(meta, dataset.source.files[:8])
    with torch.no_grad():  # another model under the same name: the strings must differ
        for parameter in recognizer.parameters():
            parameter.add_(torch.randn_like(parameter))
    parity = check_parity(recognizer, OnnxReader(path), images)
    assert parity.images == 8 and parity.same < 8 and parity.max_abs_diff > 1e-2
    assert np.isclose(parity.share, parity.same / 8)


def test_an_onnx_file_not_exported_here_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(ValueError, match="other.onnx: not an ONNX model exported by captcha"):
        OnnxReader(path)
