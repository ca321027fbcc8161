"""Lay the report out as one self-contained HTML page (``templates/report.html.j2``)."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from persd.pipeline.rundir import RunSummary
from persd.report.charts import Chart, pass_at
from persd.report.data import EvalRun, ReportData, ReportError

SECTIONS = (
    ("config", "Run"),
    ("pipeline", "Stages"),
    ("failures", "Student failures"),
    ("teacher", "Teacher"),
    ("data", "Training data"),
    ("training", "Training"),
    ("evaluation", "Evaluation"),
    ("refinement", "Refinement vs resampling"),
    ("cases", "Cases"),
)
# train_summary.json keys worth a row, in reading order
SUMMARY_KEYS = (
    "base_model",
    "method",
    "examples",
    "steps",
    "epochs",
    "final_loss",
    "mean_loss",
    "tokens",
    "tokens_per_s",
    "wall_s",
    "dtype",
)


class Card(BaseModel):
    label: str
    value: str
    detail: str = ""


def render_html(data: ReportData, charts: Sequence[Chart]) -> str:
    """The page: every value autoescaped; only the charts' SVG goes in as markup."""
    try:
        import jinja2
    except ImportError:
        raise ReportError("persd report needs jinja2: pip install 'persd[report]'") from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("persd.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails here, not as a blank
        keep_trailing_newline=True,
    )
    env.filters.update(pct=_pct, usd=_usd, seconds=_seconds, thousands=_thousands, value=_value)
    by_section: dict[str, list[Chart]] = {}
    for c in charts:
        by_section.setdefault(c.section, []).append(c)
    css = resources.files("persd.report").joinpath("templates", "report.css").read_text("utf-8")
    return env.get_template("report.html.j2").render(
        data=data,
        run_name=Path(data.run_dir).name or data.run_dir,
        charts=by_section,
        css=css,
        headline=_headline(data),
        sections=SECTIONS,
        summary_keys=SUMMARY_KEYS,
        ks=sorted({k for r in data.evals for k in pass_at(r)}),
    )


def _headline(data: ReportData) -> list[Card]:
    """The run's decision first (which model is the result, and why), then its numbers."""
    s = data.summary
    cards = []
    if s.result:
        cards.append(Card(label="result", value=s.kept or "base", detail=s.result))
    cards += [
        Card(
            label=f"attempts passed ({s.attempts_judged_on} tests)",
            value=f"{s.attempts_passed}/{s.attempts}",
            detail=_pct(s.attempt_pass_rate),
        ),
        Card(
            label="refinements accepted",
            value=f"{s.refinements_verified}/{s.refinements}",
            detail=_pct(s.acceptance_rate),
        ),
        Card(
            label="teacher tokens in / out",
            value=f"{_thousands(s.teacher_tokens_in)} / {_thousands(s.teacher_tokens_out)}",
            detail="local, no cost"
            if s.teacher_local and not s.teacher_cost_usd
            else f"cost {_usd(s.teacher_cost_usd)}",
        ),
    ]
    trained = [t.variant for t in data.training if t.variant in s.examples]
    for name in trained or list(s.examples)[:1]:
        cards.append(Card(label=f"examples: {name}", value=str(s.examples[name])))
    for bench in dict.fromkeys(r.benchmark for r in data.evals):
        runs = [r for r in data.evals if r.benchmark == bench and 1 in pass_at(r)]
        if runs:
            cards.append(_benchmark_card(bench, runs, s))
    if s.wall_seconds is not None:
        cards.append(
            Card(label="wall time", value=_seconds(s.wall_seconds), detail="every invocation")
        )
    return cards


def _benchmark_card(bench: str, runs: Sequence[EvalRun], s: RunSummary) -> Card:
    """pass@1 of the model that is the run's result; the others beside it, each named with
    the gate's judgement (a model the gate rejected is never shown as the run's outcome).
    Without a gate nothing was judged: every model's figure, base first."""
    if s.gate is None:
        value = " → ".join(_pct(pass_at(r)[1]) for r in runs)
        return Card(label=f"pass@1 {bench}", value=value, detail=" → ".join(r.model for r in runs))
    kept = s.kept or "base"
    main = next((r for r in runs if r.model == kept), runs[0])
    others = []
    for r in runs:
        if r is main:
            continue
        standing = s.standing(r.model)
        others.append(f"{r.model} {_pct(pass_at(r)[1])}" + (f" ({standing})" if standing else ""))
    standing = s.standing(main.model)
    label = f"pass@1 {bench}: {main.model}" + (f" ({standing})" if standing else "")
    return Card(label=label, value=_pct(pass_at(main)[1]), detail="; ".join(others))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _usd(x: float) -> str:
    return f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def _seconds(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min"


def _thousands(x: int) -> str:
    return f"{x:,}"


def _value(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, dict):
        return ", ".join(f"{k}: {v}" for k, v in x.items())
    return "–" if x is None else str(x)
