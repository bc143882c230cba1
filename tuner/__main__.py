"""``python -m tuner`` is the ``petl-sweep`` command (the form ``ray job submit`` uses)."""

from tuner.cli import app

app()
