import json
import urllib.request

from bench.data import load_dataset
from tests.conftest import fit_tracked, mlflow_server


def call(base: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def test_mlflow_server_on_loopback_lists_the_runs(mlflow_store, tmp_path):
    dataset = load_dataset("synthetic:tiny,count=120")
    _, run_id = fit_tracked(
        "lstm-columns",
        dataset,
        {"height": 32, "width": 96, "hidden": 8, "epochs": 1},
        log_model=False,
        progress=False,
    )
    with mlflow_server(mlflow_store) as base:
        experiment = call(
            base,
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name="
            + urllib.request.quote(dataset.name),
        )["experiment"]
        found = call(
            base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]}
        )["runs"]
        assert [r["info"]["run_id"] for r in found] == [run_id]
        metrics = {m["key"]: m["value"] for m in found[0]["data"]["metrics"]}
        assert "accuracy/test_seq_acc" in metrics and "accuracy/val_cer" in metrics
