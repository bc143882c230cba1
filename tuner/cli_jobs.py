"""Ray jobs on a cluster: ``submit`` a sweep, then ``job status|logs|stop`` it.

``tuner.cli`` registers these on the app; ``tuner.submit`` does the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tuner.cli_base import console, fail, parse_pairs

job_app = typer.Typer(no_args_is_help=True, help="Ray jobs on a cluster: status, logs, stop.")
AddressOpt = Annotated[
    str,
    typer.Option(envvar="RAY_API_SERVER_ADDRESS", help="Ray dashboard, e.g. http://HEAD:8265"),
]
TokenOpt = Annotated[
    Path | None,
    typer.Option(help="Ray auth token file (default: RAY_AUTH_TOKEN or ~/.ray/auth_token)"),
]


def submit(
    config: Annotated[Path, typer.Argument(help="sweep.yaml to run on the cluster")],
    address: AddressOpt,
    working_dir: Annotated[
        Path | None, typer.Option(help="upload this folder (the project) with the job")
    ] = None,
    token_file: TokenOpt = None,
    env: Annotated[list[str], typer.Option(help="KEY=VALUE for the job")] = [],  # noqa: B006
    wait: Annotated[bool, typer.Option(help="follow the logs until the job ends")] = True,
    timeout: Annotated[float | None, typer.Option(help="stop following after seconds")] = None,
) -> None:
    """Submit a sweep as a Ray job (``python -m tuner run sweep.yaml`` on the cluster)."""
    from tuner.config import ConfigError
    from tuner.submit import SubmitError, client_for
    from tuner.submit import submit as submit_job
    from tuner.submit import wait as wait_job

    pairs = parse_pairs(env, "--env", typed=False)
    try:
        job_id = submit_job(
            config, address, working_dir=working_dir, token_file=token_file, env=pairs
        )
    except (ConfigError, FileNotFoundError, SubmitError) as err:
        fail(str(err))
    console.print(f"submitted job [bold]{job_id}[/] to {address}")
    if not wait:
        return
    client = client_for(address, token_file)
    status = wait_job(client, job_id, timeout, on_logs=lambda text: print(text, end=""))
    console.print(f"job {job_id}: {status}")
    if status != "SUCCEEDED":
        raise typer.Exit(1)


def _job_call(address: str, token_file: Path | None, call: str, job_id: str) -> Any:
    """One JobSubmissionClient call; Ray's errors (unknown job, bad token) exit cleanly."""
    from tuner.submit import SubmitError, client_for

    try:
        return getattr(client_for(address, token_file), call)(job_id)
    except (RuntimeError, SubmitError) as err:
        fail(f"job {job_id} at {address}: {err}")


@job_app.command("status")
def job_status(job_id: str, address: AddressOpt, token_file: TokenOpt = None) -> None:
    """Print a job's status."""
    status = _job_call(address, token_file, "get_job_status", job_id)
    console.print(str(status).rsplit(".", 1)[-1])


@job_app.command("logs")
def job_logs(job_id: str, address: AddressOpt, token_file: TokenOpt = None) -> None:
    """Print a job's logs so far."""
    print(_job_call(address, token_file, "get_job_logs", job_id), end="")


@job_app.command("stop")
def job_stop(job_id: str, address: AddressOpt, token_file: TokenOpt = None) -> None:
    """Ask Ray to stop a running job."""
    stopped = _job_call(address, token_file, "stop_job", job_id)
    console.print(f"job {job_id}: {'stop requested' if stopped else 'not running'}")
