"""The MLflow ``python_function`` model of a delivered folder.

The MLflow model carries the whole folder as an artifact (weights, config, sensitivity
scores), so it needs neither the hub nor the sweep's files. ``load_context`` hands the folder
to a loader named in the model's config (``module:function``) instead of importing it here:
the tracking layer stays below the delivery layer that knows how to build the network.
Logged from code (``pyfunc_entry.py``): nothing is pickled.
"""

from __future__ import annotations

import importlib
from typing import Any

import mlflow.pyfunc
import pandas as pd

#: The artifact key of the delivered folder inside the MLflow model.
PACKAGE = "package"
#: The input column: file paths, encoded image bytes, or ``data:`` URIs (base64).
IMAGE_COLUMN = "image"


class PackagedClassifier(mlflow.pyfunc.PythonModel):
    """Images in (column ``image``), ``label``/``label_name``/``prob`` out."""

    def load_context(self, context: Any) -> None:
        module, _, name = str(context.model_config["loader"]).partition(":")
        load = getattr(importlib.import_module(module), name)
        self.classifier = load(context.artifacts[PACKAGE])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(
                f"expected a column {IMAGE_COLUMN!r} (paths, image bytes or data: URIs); "
                f"got {list(model_input.columns)}"
            )
        return self.classifier.predict(list(model_input[IMAGE_COLUMN]))
