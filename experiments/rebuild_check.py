"""Do the recorded runs still mean what they meant? Rebuild each one's training rows from its
stage records with the code of this checkout, with no teacher, and compare them byte for byte.

For every run directory under ``results/`` (a ``config.yaml`` snapshot beside stage files), a
copy without weights, evaluations or ``data/`` goes through the stages that turn records into
rows: execute, teach, verify, build. Every teacher call must come from the run's cache: the
copy's teacher points at a port nothing listens on, so a single uncached call fails the check.
Each ``data/**/*.jsonl`` file must then equal the committed one. A restructuring that changes
a prompt's text, a feedback cut or a row's order shows up here as a differing file.

    python experiments/rebuild_check.py              # every run under results/
    python experiments/rebuild_check.py results/gain-self
    python experiments/rebuild_check.py --keep /tmp/rows-a   # keep the rebuilt copies there

Runs whose rows were written by an older persd, or by an experiment script rather than the
build stage, differ already; ``--keep`` with two checkouts and a ``diff -r`` of the kept
copies shows what a code change alone did.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

SKIP = {"models", "eval", "validation", "data", "logs", "humaneval164", "report.html"}
DEAD_TEACHER = {
    "base_url": "http://127.0.0.1:9/v1",
    "api_key_env": None,
    "server": None,
    "max_attempts": 1,
}


def run_dirs(root: Path) -> list[Path]:
    """Run directories: a config snapshot, stage records and committed rows."""
    found = {p.parent for p in root.rglob("attempts.jsonl")}
    return sorted(d for d in found if (d / "config.yaml").is_file() and (d / "data").is_dir())


def rebuild(run: Path, scratch: Path) -> tuple[list[str], list[str]]:
    """The rows ``run``'s records give today, in a copy: the files that differ, and the files
    the build stage does not write (an experiment script's rows, e.g. on-policy scores)."""
    from persd.configio import merge
    from persd.pipeline.context import snapshot_config
    from persd.pipeline.run import Loop

    copy = scratch / run.name
    shutil.copytree(run, copy, ignore=lambda d, names: [n for n in names if n in SKIP])
    cfg = snapshot_config(copy)  # what an older snapshot meant by a missing key included
    teacher = merge(cfg.teacher.model_dump(mode="json"), DEAD_TEACHER)
    cfg = cfg.model_copy(update={"teacher": type(cfg.teacher).model_validate(teacher)})
    loop = Loop(cfg, copy, force=True)
    loop.execute()
    loop.teach()
    loop.verify()
    for r in range(cfg.rounds.count):
        if (run / loop.data_dir(r).relative_to(copy)).is_dir():
            loop.build(r)
    differ, elsewhere = [], []
    for old in sorted((run / "data").rglob("*.jsonl")):
        new = copy / old.relative_to(run)
        if not new.is_file():
            elsewhere.append(old.name)
        elif new.read_bytes() != old.read_bytes():
            differ.append(str(old))
    return differ, elsewhere


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--keep", type=Path, help="keep the rebuilt copies here (for a diff -r)")
    args = ap.parse_args()
    runs = args.runs or run_dirs(Path("results"))
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            scratch = (args.keep or Path(tmp)) / str(run).replace("/", "_")
            try:
                differ, elsewhere = rebuild(run, scratch)
            except Exception as e:  # noqa: BLE001 -- a run that cannot rebuild is a finding
                print(f"{run}: cannot rebuild: {type(e).__name__}: {e}", flush=True)
                bad += 1
                continue
            files = len(list((run / "data").rglob("*.jsonl"))) - len(elsewhere)
            verdict = "identical" if not differ else f"{len(differ)} differ: {', '.join(differ)}"
            other = f" (not the build stage's, not checked: {', '.join(elsewhere)})"
            print(
                f"{run}: {files} row files rebuilt, 0 teacher calls, {verdict}"
                + (other if elsewhere else ""),
                flush=True,
            )
            bad += bool(differ)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
