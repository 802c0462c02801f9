"""Starting a run from another run's weights (``init=run:<id>``): pretrain on one dataset,
fine-tune on another, the lineage in MLflow, and the errors."""

from __future__ import annotations

import mlflow
import pytest
import torch

from bench.data import load_dataset
from bench.recognizer import read_images
from bench.tracking.models import load_recognizer, logged_weights
from tests.conftest import fit_tracked

PRETRAIN = "synthetic:tiny,count=120"
REAL = "synthetic:tiny,count=120,seed=7"  # another set in the same characters and lengths
SMALL = {"epochs": 1, "hidden": 16}


def weights(run_id: str) -> dict[str, torch.Tensor]:
    """The parameters a run logged (norm layers' running statistics move without any lr)."""
    state = logged_weights(run_id).model_state()
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def test_a_fine_tune_starts_from_the_pretrained_weights_and_records_where_they_came_from(
    mlflow_store,
):
    _, pretrained = fit_tracked("crnn-modified", load_dataset(PRETRAIN), SMALL, progress=False)
    real = load_dataset(REAL)
    # lr so small that the weights cannot move: the fine-tuned model is the pretrained one
    still = {**SMALL, "lr": 1e-30, "init": f"run:{pretrained}"}
    result, tuned = fit_tracked("crnn-modified", real, still, progress=False)
    _, scratch = fit_tracked("crnn-modified", real, {**SMALL, "lr": 1e-30}, progress=False)

    start, end, fresh = weights(pretrained), weights(tuned), weights(scratch)
    assert start.keys() == end.keys()
    assert all(torch.allclose(start[k].float(), end[k].float()) for k in start)
    assert not all(torch.allclose(start[k].float(), fresh[k].float()) for k in start)

    client = mlflow.MlflowClient(mlflow_store)
    run = client.get_run(tuned)
    assert run.data.tags["init_run"] == pretrained
    assert run.data.tags["init_dataset"] == PRETRAIN
    assert run.data.params["init"] == f"run:{pretrained}"
    source_model = client.get_run(pretrained).outputs.model_outputs[0].model_id
    assert [m.model_id for m in run.inputs.model_inputs] == [source_model]  # MLflow's lineage
    assert result.history  # it trained (and tested) like any run
    # epochs=0: the pretrained model tested untrained (zero-shot) reads as the logged model does
    zero, _ = fit_tracked(
        "crnn-modified", real, {**SMALL, "epochs": 0, "init": f"run:{pretrained}"}
    )
    assert zero.history == [] and zero.test is not None
    model, meta = load_recognizer(pretrained)
    files = [real.source.root / row["file"] for row in zero.predictions]
    assert read_images(model, meta, files) == [row["prediction"] for row in zero.predictions]
    with pytest.raises(ValueError, match=f"init=run:{pretrained} is a crnn-modified model"):
        fit_tracked("ce-crnn", real, {"epochs": 1, "init": f"run:{pretrained}"})


def test_a_fine_tune_that_moves_learns_from_the_start_it_was_given(mlflow_store):
    _, pretrained = fit_tracked(
        "crnn-modified", load_dataset(PRETRAIN), {**SMALL, "epochs": 3}, progress=False
    )
    real = load_dataset(REAL)
    tuned, _ = fit_tracked("crnn-modified", real, {**SMALL, "init": f"run:{pretrained}"})
    scratch, _ = fit_tracked("crnn-modified", real, SMALL, progress=False)
    # three epochs of pretraining on the same kind of images: a better first epoch than none
    assert tuned.history[0]["train_loss"] < scratch.history[0]["train_loss"]


@pytest.mark.parametrize(
    "init, message",
    [
        ("run:nope", "init='run:nope' is out of range: use run:<MLflow run id>"),
        ("run:" + "0" * 32, "no MLflow run 00000000000000000000000000000000"),
        ("", "epochs=0 is out of range: use >= 1 [(]0 with init"),
    ],
)
def test_a_bad_init_is_named_before_training(init, message):
    settings = {**SMALL, "init": init} if init else {**SMALL, "epochs": 0}
    with pytest.raises(ValueError, match=message):
        fit_tracked("crnn-modified", load_dataset(PRETRAIN), settings)
