"""Deliver a sweep's winner: the champion per task, packaged, registered, exported, served.

``champion`` chooses per task on validation accuracy only (test is shown beside it);
``rebuild`` turns a final run's stored tensors back into its model; ``package`` writes and
reads the deliverable folder (``model.safetensors``, ``config.json``, ``README.md``; plain
timm where the method merges); ``images`` and ``predict`` run it on image files;
``register`` puts champions in the MLflow Model Registry through the tracking layer.
"""


class DeliverError(ValueError):
    """What stops a delivery step, in one line a user can act on."""
