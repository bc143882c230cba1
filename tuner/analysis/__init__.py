"""``petl-sweep analyze KIND``: the seed studies' analyses, read from MLflow only.

Each kind reads the final runs of one or more experiments (any tracking server), writes a
parquet table and PNG plots, logs them as an ``analysis`` run (tag ``analysis=KIND``) and
returns a table for the console. Nothing here trains; it reads what sweeps stored.
"""
