"""``persd eval``: sample a student on a benchmark, score HIDDEN tests, refine with SEEN tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.status import Status
from rich.table import Table

from persd.cli.common import console, err_console
from persd.errors import PersdError
from persd.evaluate.multistep import EvalReport

if TYPE_CHECKING:
    from persd.pipeline.eval_settings import EvalSettings


def report_table(r: EvalReport) -> Table:
    ks = sorted(r.steps[0].pass_at)
    t = Table(
        title=f"{r.model_id} on {r.benchmark}: n={r.n}, T={r.temperature} "
        f"(feedback: {r.feedback_tests} tests; score: {r.score_tests} tests)"
    )
    for col in ("step", "arm", *(f"pass@{k}" for k in ks), "seen pass", "calls (total)"):
        t.add_column(col, justify="right")
    for s in r.steps:
        t.add_row(
            str(s.step),
            s.arm,
            *(f"{100 * s.pass_at[k]:.1f}" for k in ks),
            f"{100 * s.seen_pass_rate:.1f}",
            f"{s.calls} ({s.calls_total})",
        )
    return t


def _check_paths(model: str, adapter: Path | None) -> None:
    """Paths given on the command line exist: a wrong one fails here, in milliseconds, not
    after the model has loaded (20 s and 4 GB for the default student)."""
    if adapter is not None:
        if not adapter.exists():
            raise PersdError(f"--adapter {adapter}: no such file or directory")
        if adapter.is_dir() and not (adapter / "adapter_config.json").is_file():
            raise PersdError(
                f"--adapter {adapter}: not a LoRA adapter (no adapter_config.json); give the "
                "directory a training run wrote (<out>/final) or a GGUF LoRA file"
            )
    path = Path(model).expanduser()
    if (model.startswith(("/", ".", "~")) or model.endswith(".gguf")) and not path.exists():
        raise PersdError(
            f"--model {model}: no such file or directory; give an existing .gguf file, a "
            "Hugging Face model directory or a registry name (`persd models list`)"
        )


Limit = Annotated[int | None, typer.Option(help="A seeded sample of N tasks (never the first N).")]
MbppShape = Annotated[
    str | None, typer.Option(help="MBPP prompts: 'docstring' or 'signature' (prompt.mbpp_shape).")
]
Out = Annotated[
    Path | None, typer.Option(help="Write report.json and samples here; rerun with it to resume.")
]
Versus = Annotated[
    Path | None,
    typer.Option(
        help="Another evaluation's --out (the base's, same benchmark): print the tasks "
        "gained and lost against it, the exact McNemar p and the noise floor."
    ),
]
Run = Annotated[
    Path | None,
    typer.Option(
        help="A run directory: score its model (the gate's kept one, or --variant) with the "
        "student, prompt and evaluate settings it was trained and judged with; flags override."
    ),
]
Variant = Annotated[
    str | None, typer.Option(help="With --run: which model (self, self@epoch1, base).")
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="A run config YAML: its student, prompt, evaluate."),
]


def eval_command(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Registry name, .gguf, HF dir.")
    ] = None,
    benchmark: Annotated[
        str, typer.Option("--benchmark", "-b", help="humaneval, mbpp-test, or a task pool .jsonl.")
    ] = "humaneval",
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter (PEFT dir).")] = None,
    run: Run = None,
    variant: Variant = None,
    config: ConfigFile = None,
    n: Annotated[int | None, typer.Option(help="Samples per task.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy.")] = None,
    refine_steps: Annotated[int | None, typer.Option(help="Self-refinement steps.")] = None,
    limit: Limit = None,
    max_new_tokens: Annotated[int | None, typer.Option()] = None,
    backend: Annotated[str | None, typer.Option(help="auto, transformers, llama_cpp, vllm")] = None,
    chat: Annotated[bool | None, typer.Option("--chat/--no-chat", help="Chat template.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    mbpp_shape: MbppShape = None,
    out: Out = None,
    versus: Versus = None,
) -> None:
    """Evaluate a student: pass@k on hidden tests, refinement steps vs equal-budget resampling.
    Settings: built-in defaults < --config (or --run's config) < flags."""
    if model is not None:
        _check_paths(model, adapter)
    _check_versus(versus, out, benchmark)
    if benchmark.lower().startswith("mbpp") and benchmark.lower() not in ("mbpp-test",):
        raise PersdError(f"--benchmark {benchmark}: evaluate MBPP on 'mbpp-test' (500 tasks)")
    if mbpp_shape not in (None, "docstring", "signature"):
        raise PersdError(f"--mbpp-shape {mbpp_shape}: expected 'docstring' or 'signature'")
    flags = {
        "student": {"model": model, "adapter": adapter and str(adapter), "chat": chat},
        "evaluate": {
            "n": n, "temperature": temperature, "refine_steps": refine_steps, "limit": limit,
            "max_new_tokens": max_new_tokens, "backend": backend, "seed": seed,
            "sample_seed": seed,
        },
        "prompt": {"mbpp_shape": mbpp_shape},
    }  # fmt: skip
    settings = _settings(run, variant, config, flags, given=model or adapter)
    from persd.pipeline.model_eval import evaluate_model

    with console.status("evaluating") as status:
        report = evaluate_model(
            settings.student,
            settings.evaluate,
            settings.sandbox,
            benchmark=benchmark,
            out=out,
            prompt=settings.prompt,
            on_progress=_progress(status),
        )
    _print_report(report, out)
    if versus is not None and out is not None:
        _print_versus(report, out, versus)


def _settings(
    run: Path | None, variant: str | None, config: Path | None, flags: dict, given: object
) -> EvalSettings:
    """The run config (built-in defaults, --config or --run's snapshot) under the flags given,
    resolved as the run resolves its own evaluations; the model is --run's unless -m or
    --adapter name one."""
    from persd.config import load_config
    from persd.configio import merge
    from persd.pipeline.context import snapshot_config
    from persd.pipeline.eval_settings import eval_settings, run_model

    if run is not None and config is not None:
        raise PersdError("--run and --config: give one (--run reads the run's own config)")
    if run is None and variant is not None:
        raise PersdError("--variant names a model of a run: give --run too")
    if run is None and not given:
        raise PersdError("give the model to score: --model, or --run with a run directory")
    given_flags = {
        k: {f: v for f, v in section.items() if v is not None} for k, section in flags.items()
    }
    if run is None:
        return eval_settings(load_config(config, given_flags), None)
    if not (run / "config.yaml").is_file():
        raise PersdError(f"--run {run}: no config.yaml; give a directory `persd run` wrote")
    made_with = snapshot_config(run).model_dump(mode="json")
    trained = None if given else run_model(run, variant)
    return eval_settings(load_config(None, merge(made_with, given_flags)), trained)


def _check_versus(versus: Path | None, out: Path | None, benchmark: str) -> None:
    """``--versus`` names a finished evaluation of the same benchmark, and ``--out`` is given
    (the per-task verdicts are read from both directories)."""
    if versus is None:
        return
    if out is None:
        raise PersdError("--versus needs --out: the paired verdicts are read from both directories")
    report = versus / "report.json"
    if not (versus / "samples_base.jsonl").is_file() or not report.is_file():
        raise PersdError(
            f"--versus {versus}: no report.json and samples_base.jsonl; give a directory a "
            "finished `persd eval --out` wrote"
        )
    other = json.loads(report.read_text()).get("benchmark")
    if other != benchmark:
        raise PersdError(f"--versus {versus}: an evaluation of {other}, not of {benchmark}")


def _print_versus(report: EvalReport, out: Path, versus: Path) -> None:
    """Paired per task against the other evaluation, with the serving path's noise floor."""
    from persd.evaluate.floor import floor_for
    from persd.evaluate.paired import paired
    from persd.pipeline.stages.gate import per_task

    p = paired(per_task(versus), per_task(out))
    console.print(
        f"against {versus}: {p.passed}/{p.tasks} vs {p.base_passed}/{p.tasks}, "
        f"gained +{p.gained}, lost −{p.lost}, exact McNemar p={p.p_value:.2g}"
    )
    floor = floor_for(report.backend)
    if floor is not None:
        console.print(f"noise floor: {floor.note([p.tasks])}")


def _progress(status: Status) -> Callable[[str, int, int], None]:
    """The spinner's text; without a terminal, a line at each tenth of each phase."""
    shown: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        status.update(f"{stage}: {done}/{total}")
        tenth = 10 * done // max(total, 1)
        if not err_console.is_terminal and shown.get(stage, -1) < tenth:
            shown[stage] = tenth
            err_console.print(f"{stage}: {done}/{total}")

    return progress


def _print_report(report: EvalReport, out: Path | None) -> None:
    console.print(report_table(report))
    console.print(f"scored: {report.backend} on {report.weights}")
    gen = (
        "unknown (resumed from an older journal)"
        if report.generate_s is None
        else f"{report.generate_s:,.0f} s"
    )
    resumed = f", {report.batches_resumed} batches resumed" if report.batches_resumed else ""
    console.print(f"generation {gen}, scoring {report.score_s:,.1f} s{resumed}")
    if out:
        console.print(f"report and samples: {out}")
