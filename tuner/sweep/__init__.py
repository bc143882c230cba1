"""Where Ray Tune, Optuna and the tracker meet: plan, studies, final retrains, orchestration."""
