"""Submit a sweep to a running Ray cluster as a Ray job (``petl-sweep submit``).

A thin, typed wrapper over Ray's ``JobSubmissionClient``; it adds nothing Ray's own
``ray job submit --address URL -- python -m tuner run sweep.yaml`` cannot do, but it
validates the sweep *before* anything is uploaded (a typo fails here, not on the cluster),
ships the sweep file with the job, and keeps Ray 2.60's token authentication on: the token
comes from ``--token-file``/``RAY_AUTH_TOKEN``/``~/.ray/auth_token`` and is never disabled.

The job's entrypoint is the documented command, ``python -m tuner run <sweep.yaml>``; the
sweep file travels in the job's working directory (the project when ``--working-dir`` is
given, else a temporary folder holding just the sweep file, for images that have the
package installed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuner.config import load_config

#: Never uploaded with ``--working-dir`` (environments, data, results, caches, VCS).
EXCLUDES = [
    ".venv",
    ".git",
    "data",
    "results",
    "mlruns",
    "ray_results",
    "**/__pycache__",
    "**/.cache",
    "*.db",
]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
#: Attempts (2 s apart) while a just-started head has no job agent yet.
AGENT_RETRIES = 30


class SubmitError(RuntimeError):
    """A job that cannot be submitted as asked (bad sweep, no token, unreachable head)."""


def use_token(token_file: Path | None) -> None:
    """Turn Ray's token authentication on for this process's client calls.

    Ray's HTTP client sends the token only when ``RAY_AUTH_MODE=token``; the token is read
    from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise SubmitError(
            "RAY_AUTH_MODE=disabled: petl-sweep never disables Ray token authentication; "
            "unset it and pass --token-file or RAY_AUTH_TOKEN"
        )
    if token_file is not None:
        if not token_file.is_file():
            raise SubmitError(f"token file {token_file} does not exist")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file.resolve())
        os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_MODE"] = "token"


def entrypoint(sweep_name: str) -> str:
    """The documented command, run in the job's working directory."""
    return f"python -m tuner run {sweep_name}"


@contextmanager
def job_directory(sweep: Path, working_dir: Path | None) -> Iterator[tuple[Path, str]]:
    """The folder uploaded as the job's working dir, and the sweep's name inside it."""
    if working_dir is not None:
        working_dir = working_dir.resolve()
        try:
            rel = sweep.resolve().relative_to(working_dir)
        except ValueError:
            raise SubmitError(
                f"sweep file {sweep} is outside --working-dir {working_dir}; "
                "put it inside so it is uploaded with the job"
            ) from None
        yield working_dir, rel.as_posix()
        return
    with tempfile.TemporaryDirectory(prefix="petl-sweep-job-") as tmp:
        shutil.copy(sweep, Path(tmp) / "sweep.yaml")
        yield Path(tmp), "sweep.yaml"


def submit(
    sweep: Path,
    address: str,
    *,
    working_dir: Path | None = None,
    token_file: Path | None = None,
    env: dict[str, str] | None = None,
    submission_id: str | None = None,
) -> str:
    """Validate ``sweep``, submit it to the cluster at ``address``; returns the job id."""
    cfg = load_config(sweep)  # raises ConfigError naming the field
    try:
        client = client_for(address, token_file)
    except SubmitError:
        raise
    except Exception as err:  # connection errors come in several types
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {err}") from err
    with job_directory(sweep, working_dir) as (folder, name):
        runtime_env: dict[str, Any] = {
            "working_dir": str(folder),
            "excludes": EXCLUDES,
        }
        if env:
            runtime_env["env_vars"] = dict(env)
        for attempt in range(AGENT_RETRIES):
            try:
                return client.submit_job(
                    entrypoint=entrypoint(name),
                    runtime_env=runtime_env,
                    submission_id=submission_id,
                    metadata={"sweep": cfg.name, "tool": "petl-sweep"},
                )
            except RuntimeError as err:
                # A freshly started head answers 500 until its job agent is up.
                if "No available agent" not in str(err) or attempt == AGENT_RETRIES - 1:
                    raise
                time.sleep(2.0)
    raise AssertionError("unreachable")


def client_for(address: str, token_file: Path | None = None) -> Any:
    use_token(token_file)
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def wait(
    client: Any,
    job_id: str,
    timeout_s: float | None = None,
    on_logs: Callable[[str], None] | None = None,
    poll_s: float = 2.0,
) -> str:
    """Poll until the job ends (or the timeout passes); returns its final status name."""
    started, shown = time.time(), 0
    while True:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
        if on_logs is not None:
            logs = client.get_job_logs(job_id)
            if len(logs) > shown:
                on_logs(logs[shown:])
                shown = len(logs)
        if status in TERMINAL:
            return status
        if timeout_s is not None and time.time() - started > timeout_s:
            return status
        time.sleep(poll_s)
