"""Plain-PyTorch training of one run: no Ray, no Optuna, no MLflow (``spec``, ``trainer``)."""
