"""MLflow records → the leaderboard: ``collect``, ``summarise``, ``render``, ``stats`` (no Ray)."""
