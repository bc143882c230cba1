"""MLflow's own tag names the rest of the package reads, spelled once (no mlflow import).

The leaderboard, the analyses and the sweep's reconcile step tell a study's run from its
trials' by MLflow's nesting tag; they import the name from here, so the literal lives in
the tracking layer with everything else of MLflow's.
"""

from __future__ import annotations

#: MLflow's tag linking a child run to its parent (``mlflow.utils.mlflow_tags``)
PARENT_RUN_TAG = "mlflow.parentRunId"
#: Our tag holding the key a sweep addresses a run by (``task:method``,
#: ``task:method/trial_id``, ``final/task:method/seed``): a resumed sweep adopts runs by it
RUN_KEY = "petl.key"
