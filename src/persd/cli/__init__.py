"""The ``persd`` command: one module per command group, each thin (parse, call the library,
print). The library never imports from here; ``common.run_app`` is the one place a
``PersdError`` becomes a line on stderr.

    persd run | synthesize | attempt | ... | build    (run.py: the loop and its stages)
    persd eval (eval.py)   persd train (train.py)   persd report (report.py)
    persd score | check-references | tasks (score.py)   persd models ... (models.py)
"""

from __future__ import annotations

from typing import Any


def main() -> None:
    """The console script. The app is assembled on call, not on import, so that
    ``python -m persd.cli.train`` (under accelerate) does not import its module twice."""
    from persd.cli.mount import main as run

    run()


def __getattr__(name: str) -> Any:
    if name == "app":
        from persd.cli.mount import app

        return app
    raise AttributeError(f"module 'persd.cli' has no attribute {name!r}")
