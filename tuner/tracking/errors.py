"""What the tracker raises and what it takes for an outage (shared by its two halves)."""

from __future__ import annotations

from mlflow.exceptions import MlflowException


class TrackingError(RuntimeError):
    """Writes that could not reach MLflow; the journal that still holds them is named."""


class Behind(TrackingError):
    """A read that would not see earlier writes (still journaled): retried, then raised."""


def transient(err: BaseException) -> bool:
    """A failure of the transport or the server (retrying later may succeed), not of the
    request: no connection, a timeout, or an HTTP status of 429 or 5xx. MLflow's client
    retries such calls itself for minutes and then raises an ``MlflowException`` whose
    status code (``get_http_status_code``) says which it was; 4xx (a bad request, a missing
    run) are bugs, never retried."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    if type(err).__module__.split(".")[0] in ("requests", "urllib3"):
        return True
    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
        return status == 429 or status >= 500
    return False
