"""The accelerate config files persd ships, for ``accelerate launch --config_file``."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from persd.errors import PersdError


def accelerate_configs() -> dict[str, Path]:
    """Shipped configs by name: ddp, ddp_cpu, zero2, zero3, zero3_offload, fsdp."""
    folder = resources.files("persd.train").joinpath("accelerate")
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")}


def accelerate_config(name: str) -> Path:
    """The path of a shipped accelerate config, or a PersdError naming the known ones."""
    configs = accelerate_configs()
    if name in configs:
        return configs[name]
    close = difflib.get_close_matches(name, configs, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise PersdError(
        f"unknown accelerate config '{name}'; {hint}known: {', '.join(sorted(configs))}"
    )


if __name__ == "__main__":  # python -m persd.train.launch zero3  ->  the file's path
    import sys

    try:
        sys.stdout.write(f"{accelerate_config(sys.argv[1] if len(sys.argv) > 1 else '')}\n")
    except PersdError as e:
        sys.stderr.write(f"error: {e}\n")
        raise SystemExit(1) from None
