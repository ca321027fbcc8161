"""CPU time per sample of persd's executor, split by process, A/B between source trees.

Wall-clock throughput means nothing on a machine whose cores other jobs are using; the CPU
time each process spends per sample does (it is inflated by contention too, through caches,
but alike for both sides when the runs are interleaved). Each measurement runs in a fresh
interpreter with one tree's ``src`` first on ``sys.path`` and calls ``score_samples`` on
HumanEval canonical solutions (a fresh copy of the samples each time), as
benchmarks/bench_executor.py does. Between the moment every worker is ready and the moment
the sandbox starts closing, it reads:

- parent: ``getrusage(RUSAGE_SELF)`` of the calling process (all its threads: tests,
  comparisons, candidate calls, records, the results file);
- worker: each worker's own ``utime + stime`` from ``/proc/<pid>/stat``;
- sample: each worker's ``cutime + cstime`` (the sample processes it reaped, and their
  orphans);

and minor page faults alike. Start-up and close of the pool are left out: they are fixed costs
per run, not per sample. The trees alternate (A, B, A, B, ...) and the table gives medians.

    python benchmarks/cpu_per_sample.py --tree A=/tmp/sbx-base --tree B=. --reps 4
    python benchmarks/cpu_per_sample.py --tree now=. --reps 1 --copies 1   # a quick look
    # one tree, two configs: NAME=PATH, then SandboxConfig fields as KEY=JSON
    python benchmarks/cpu_per_sample.py --tree on=. --tree off=.,send_calls_ahead=false
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")
FIELDS = ("parent", "worker", "sample", "total")


def _proc_stat(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # After the name: state is fields[0], so /proc's field n (1-based) is fields[n - 3].
    return {
        "minflt": int(fields[7]),
        "cminflt": int(fields[8]),
        "ticks": int(fields[11]) + int(fields[12]),
        "cticks": int(fields[13]) + int(fields[14]),
    }


def _snapshot(pids: list[int]) -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    snap = {"parent_s": ru.ru_utime + ru.ru_stime, "parent_flt": ru.ru_minflt}
    worker_s = sample_s = worker_flt = sample_flt = 0.0
    for pid in pids:
        st = _proc_stat(pid)
        worker_s += st["ticks"] / _CLK_TCK
        sample_s += st["cticks"] / _CLK_TCK
        worker_flt += st["minflt"]
        sample_flt += st["cminflt"]
    snap.update(worker_s=worker_s, sample_s=sample_s, worker_flt=worker_flt, sample_flt=sample_flt)
    snap["load"] = float(Path("/proc/loadavg").read_text().split()[0])
    return snap


def measure_here(copies: int, workers: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this interpreter (whichever persd ``sys.path`` finds first)."""
    import persd
    import persd.evaluate.score as score
    from persd.sandbox import SandboxConfig
    from persd.tasks import load_humaneval

    marks: dict[str, dict[str, float]] = {}

    class Measured(score.Sandbox):  # type: ignore[misc,name-defined]
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self._pids = [w.pid for w in list(self._idle.queue)]
            marks["start"] = _snapshot(self._pids)

        def close(self) -> None:
            if "end" not in marks:
                marks["end"] = _snapshot(self._pids)
            super().close()

    score.Sandbox = Measured
    tasks = load_humaneval()
    rows = [
        {"task_id": t.id, "completion": (t.reference or "")[len(t.prompt) :]}
        for t in tasks
        for _ in range(copies)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        config = SandboxConfig(workers=workers, **settings)
        report = score.score_samples(path, "humaneval", config=config, ks=(1,))
    a, b = marks["start"], marks["end"]
    n = len(rows)
    out = {
        "persd": str(Path(persd.__file__).parent),
        "samples": n,
        "passed": report.statuses.get("passed", 0),
        "load": [a["load"], b["load"]],
    }
    for key in ("parent", "worker", "sample"):
        out[key] = (b[f"{key}_s"] - a[f"{key}_s"]) / n * 1000  # ms per sample
        out[f"{key}_flt"] = (b[f"{key}_flt"] - a[f"{key}_flt"]) / n
    out["total"] = out["parent"] + out["worker"] + out["sample"]
    return out


def measure(tree: Path, copies: int, workers: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One measurement in a fresh interpreter importing persd from ``tree``/src."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve() / "src")}
    args = [sys.executable, __file__, "--child", json.dumps([copies, workers, settings])]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"measurement of {tree} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def _tree(spec: str) -> tuple[str, str, dict[str, Any]]:
    """NAME=PATH[,KEY=JSON...] -> (name, path, SandboxConfig settings)."""
    head, *pairs = spec.split(",")
    name, path = head.split("=", 1)
    settings = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value
    return name, path, settings


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--tree",
        action="append",
        metavar="NAME=PATH",
        help="a source tree (repeat; alternated in the given order), optionally followed by "
        "SandboxConfig fields: NAME=PATH,KEY=JSON,...; default: this checkout",
    )
    p.add_argument("--reps", type=int, default=4, help="measurements per tree (default 4)")
    p.add_argument("--copies", type=int, default=3, help="samples per task (default 3: 492)")
    p.add_argument("--workers", type=int, default=4, help="sandbox workers (default 4)")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure_here(*json.loads(args.child))))
        return
    root = Path(__file__).resolve().parent.parent
    trees = [_tree(spec) for spec in (args.tree or [f"this={root}"])]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in trees}
    for rep in range(args.reps):
        for name, path, settings in trees:
            t0 = time.monotonic()
            r = measure(Path(path), args.copies, args.workers, settings)
            runs[name].append(r)
            print(
                f"rep {rep + 1} {name:>8}: parent {r['parent']:.2f}  worker {r['worker']:.2f}  "
                f"sample {r['sample']:.2f}  total {r['total']:.2f} ms/sample  "
                f"faults w/s {r['worker_flt']:.0f}/{r['sample_flt']:.0f}  "
                f"passed {r['passed']}/{r['samples']}  load {r['load'][0]:.1f}-{r['load'][1]:.1f}"
                f"  ({time.monotonic() - t0:.0f}s)",
                flush=True,
            )
    print(f"\nmedian of {args.reps}, CPU ms per sample ({args.workers} workers):")
    print(f"{'tree':>10} " + " ".join(f"{f:>7}" for f in FIELDS) + "  faults w/s   load")
    for name, rs in runs.items():
        med = {f: statistics.median(r[f] for r in rs) for f in FIELDS}
        wf = statistics.median(r["worker_flt"] for r in rs)
        sf = statistics.median(r["sample_flt"] for r in rs)
        loads = [x for r in rs for x in r["load"]]
        print(
            f"{name:>10} "
            + " ".join(f"{med[f]:7.2f}" for f in FIELDS)
            + f"  {wf:4.0f}/{sf:4.0f}  {min(loads):.1f}-{max(loads):.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
