"""The tracking layer: the only modules that import mlflow (``client``) and the artifacts
a run leaves behind, serialised to bytes (``artifacts``)."""
