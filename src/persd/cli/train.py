"""``persd train``: fine-tune the student on training-set JSONL files. Thin, like every command.

Mounted by ``persd.cli`` as ``persd train``. Standalone, and under
``accelerate launch`` (which runs a module or a script, once per process)::

    python -m persd.cli.train DATA.jsonl --model M --out DIR
    accelerate launch --config_file ddp.yaml -m persd.cli.train DATA.jsonl --model M --out DIR
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from persd.cli.common import console, err_console, run_app
from persd.cli.progress import RichProgress, progress_bars

if TYPE_CHECKING:
    from persd.train import TrainResult

train_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    help="Fine-tune the student (TRL SFT; LoRA or full weights).",
)


Data = Annotated[list[Path], typer.Argument(help="Training rows (Example JSONL), one or more.")]
Model = Annotated[
    str, typer.Option("--model", "-m", help="Base model: registry name, .gguf, HF dir or hub id.")
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML: training keys, or a run config's train:."),
]
Format = Annotated[
    str | None, typer.Option("--format", help="chat (default) or base: how rows were built.")
]
InitAdapter = Annotated[
    str | None,
    typer.Option("--init-adapter", help="Continue this trained LoRA adapter (a PEFT dir)."),
]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the newest checkpoint in --out.")]
Merge = Annotated[
    bool, typer.Option("--merge", help="Also write a merged model to OUT/merged (LoRA).")
]
Teacher = Annotated[
    str | None,
    typer.Option(help="persd_onpolicy rows: the model that scores them (same tokenizer)."),
]
TeacherCache = Annotated[
    Path | None,
    typer.Option(
        "--teacher-cache",
        help="persd_onpolicy: teacher scores JSONL, read and extended "
        "(default: OUT/teacher_scores.jsonl).",
    ),
]


@train_app.command("train")
def train_command(
    data: Data,
    model: Model,
    out: Out,
    config: ConfigFile = None,
    method: Annotated[str | None, typer.Option(help="lora (default) or full.")] = None,
    fmt: Format = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps; beats --epochs.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for init, shuffling and dropout.")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads.")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto (default), float32 or bfloat16.")] = None,
    init_adapter: InitAdapter = None,
    resume: Resume = False,
    merge: Merge = False,
    teacher: Teacher = None,
    teacher_cache: TeacherCache = None,
) -> None:
    """Fine-tune MODEL on DATA; writes checkpoints, TensorBoard logs and the model under OUT."""
    from persd.train import load_train_config, train

    onpolicy = {"teacher": teacher, "cache": teacher_cache and str(teacher_cache)}
    overrides = {
        "method": method,
        "format": fmt,
        "epochs": epochs,
        "max_steps": max_steps,
        "learning_rate": lr,
        "seed": seed,
        "threads": threads,
        "dtype": dtype,
        "init_adapter": init_adapter,
        "resume": resume or None,
        "merge": merge or None,
        "onpolicy": {k: v for k, v in onpolicy.items() if v} or None,
    }
    cfg = load_train_config(config, overrides)
    with progress_bars(err_console) as bars:
        result = train(cfg, data, model, out, progress=RichProgress(bars))
    if result.main_process:  # every rank ran train(); one reports
        _report(result)


def _report(result: TrainResult) -> None:
    s = result.summary
    loss = f"{s.final_loss:.4f}" if s.final_loss is not None else "n/a"
    console.print(
        f"trained {s.method} on {s.examples} rows: {s.steps} steps, final loss {loss}, "
        f"{s.session_tokens:,} tokens at {s.tokens_per_s:,.0f} tokens/s in {s.wall_s:.0f} s"
    )
    console.print(f"model: {result.model_dir}")
    if result.merged_dir:
        console.print(f"merged: {result.merged_dir}")


if __name__ == "__main__":  # `accelerate launch -m persd.cli.train ...`: once per process
    run_app(train_app)
