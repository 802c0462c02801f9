"""The logged model as MLflow loads it: a pyfunc "model from code" (no pickle), uint8 images
``(N, C, H, W)`` in, the strings read out.

MLflow runs this file when it loads the model; the ``bench`` package travels with the model
(``code_paths``), so it loads outside a checkout. Its artifacts: the weights (a state dict) and
``bench.json`` (approach, hyperparameters, codec, charset).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class CaptchaReader(PythonModel):
    """Rebuilds the approach's model from ``bench.json``, loads its weights and decodes its
    output with the run's codec."""

    def load_context(self, context: Any) -> None:
        import torch

        from bench.recognizer import build_recognizer, codec_from_metadata

        meta = json.loads(Path(context.artifacts["bench"]).read_text())
        self.recognizer = build_recognizer(meta)
        weights = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        self.recognizer.load_state_dict(weights)
        self.recognizer.eval()
        self.codec = codec_from_metadata(meta)

    def predict(self, context, model_input, params=None):  # no type hints: the signature checks
        """``model_input``: uint8 ``(N, C, H, W)``; returns one string per image."""
        import torch

        images = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.uint8))
        with torch.no_grad():
            return self.codec.decode(self.recognizer(images).float())


mlflow.models.set_model(CaptchaReader())
