"""``petl-sweep ui``: the MLflow UI on a sweep's own store, opened on its runs table.

A local store (SQLite, the default) gets ``mlflow ui`` bound to 127.0.0.1 (nothing on the
network sees the runs); a tracking server is already a UI, so only its URL is printed. Either
way the URL points at the experiment's runs page, not at MLflow's home page.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from urllib.parse import urlparse

from tuner.tracking.client import TrackingService

HOST = "127.0.0.1"


class UIError(RuntimeError):
    """The UI cannot be started as asked (port taken, unknown experiment)."""


def is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in ("http", "https")


def runs_url(base: str, experiment_id: str) -> str:
    """The runs table of an experiment, in MLflow 3's "Model training" view.

    MLflow 3.17's UI picks GenAI or model-training views from a ``workflowType`` it keeps
    per browser (default: GenAI, whose experiment page is a traces overview); the query
    parameter selects model training, and the browser remembers it from then on. The
    experiment's ``mlflow.experimentKind`` tag (set by the tracker) serves UIs that read it.
    """
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def experiment_id(tracking_uri: str, experiment: str) -> str:
    try:
        return TrackingService(tracking_uri, experiment, create=False).experiment_id
    except ValueError as err:
        raise UIError(str(err)) from None


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ui_command(tracking_uri: str, port: int) -> list[str]:
    """``mlflow ui`` on the store, loopback only (the same Python as this process)."""
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", tracking_uri, "--host", HOST, "--port", str(port),
    ]  # fmt: skip


def start_ui(tracking_uri: str, port: int) -> subprocess.Popen:
    """Start the UI process (the caller waits on it); a taken port is a clear error."""
    if not port_free(port):
        raise UIError(f"port {port} on {HOST} is in use; pass --port with a free one")
    return subprocess.Popen(ui_command(tracking_uri, port))
