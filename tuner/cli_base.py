"""What every ``petl-sweep`` command module shares: the console, the one way to fail, the
one ``KEY=VALUE`` parser and the options several commands take."""

from __future__ import annotations

from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

console = Console()


def fail(message: str, code: int = 2) -> None:
    """One clear message, no traceback: exit 2 for usage/config, 1 for data and weights.
    Never wrapped at the terminal's width: a path or command in it must stay copyable."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def parse_pairs(pairs: list[str], option: str = "--set", typed: bool = True) -> dict[str, Any]:
    """The one ``KEY=VALUE`` parser: values are YAML scalars (numbers, bools, lists) when
    ``typed``, else kept as strings (environment variables); a pair without ``=`` exits 2."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"{option} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value) if typed else value
    return out


PresetOpt = Annotated[
    str | None,
    typer.Option(help="a seed study's protocol (petl-sweep presets); the file is laid over it"),
]


SetOpt = Annotated[list[str], typer.Option("--set", help="override, e.g. tune.num_samples=4")]
