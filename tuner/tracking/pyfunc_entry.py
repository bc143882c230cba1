"""MLflow models-from-code entry: the file MLflow copies into a model and runs to load it."""

from mlflow.models import set_model

from tuner.tracking.pyfunc import PackagedClassifier

set_model(PackagedClassifier())
