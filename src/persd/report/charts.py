"""The report's figures, drawn with matplotlib as inline SVG: no script, nothing fetched.

Every chart is a ``Chart`` with a stable id (``chart-<id>`` in the page) and the section it
belongs to; a chart is made only when its data exist, and the page says so where one is not.
Text stays text (``svg.fonttype: none``), so labels are searchable and matplotlib escapes
them like any XML text.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from persd.report.data import EvalRun, ReportData, ReportError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe-Ito: tells apart under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#555")
PASSED, BASE = "#009E73", "#8C8C8C"
REJECTED = ("#D55E00", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#0072B2", "#555")  # no green
RC = {
    "svg.fonttype": "none",  # text as <text>, not glyph paths: small, selectable, escaped
    "text.parse_math": False,  # model and variant names are data: a '$' is not TeX
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "legend.frameon": False,
}
WIDTH = 7.0  # inches; the page scales the SVG to its column


class Chart(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    section: str
    title: str
    svg: str


def draw_charts(data: ReportData) -> list[Chart]:
    """Every chart the data support, in page order."""
    try:
        import matplotlib
    except ImportError:
        raise ReportError(
            "persd report draws its charts with matplotlib: pip install 'persd[report]'"
        ) from None
    charts: list[Chart] = []
    with matplotlib.rc_context(RC):
        for section, chart_id, title, draw in _plan(data):
            charts.append(
                Chart(id=chart_id, section=section, title=title, svg=_svg(draw, chart_id, title))
            )
    return charts


def _plan(data: ReportData) -> Iterator[tuple[str, str, str, Any]]:
    s = data.summary
    yield "pipeline", "funnel", "From tasks to accepted refinements", lambda f: _funnel(f, data)
    if s.failures:
        title = f"Why the student's attempts failed ({s.attempts_judged_on} tests)"
        yield "failures", "failures", title, lambda f: _barh(f, s.failures, "attempts")
    if any(v.total for v in data.verdicts):
        title = "Teacher programs on all of the task's tests"
        yield "teacher", "acceptance", title, lambda f: _acceptance(f, data)
    if any(u.tokens_in or u.tokens_out for u in data.teacher):
        yield "teacher", "teacher-tokens", "Teacher tokens", lambda f: _tokens(f, data)
    if s.examples:
        title = "Training examples per variant"
        yield "data", "examples", title, lambda f: _barh(f, s.examples, "examples", sort=False)
    if any(t.curve for t in data.training):
        yield "training", "loss", "Training loss", lambda f: _loss(f, data)
    if data.evals:
        title = "pass@k on hidden tests, per model and benchmark"
        yield "evaluation", "passk", title, lambda f: _passk(f, data.evals)
    for i, run in enumerate(r for r in data.evals if r.report.refine_steps > 0):
        title = f"{run.model} on {run.benchmark}: refinement steps vs equal-budget resampling"
        yield "refinement", f"refine-{i}", title, lambda f, run=run: _refine(f, run)


def _svg(draw: Any, chart_id: str, title: str) -> str:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context({"svg.hashsalt": chart_id}):  # stable ids: the same run, the same file
        fig = Figure(figsize=(WIDTH, 3.0), layout="constrained")
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue().decode("utf-8")
    text = text[text.index("<svg") :]  # drop the XML prolog and doctype: it sits in HTML
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)  # RDF credits
    # Ids are per SVG document; inline, every chart shares one id space (axes_1, clip paths).
    text = re.sub(r'\bid="([^"]+)"', rf'id="{chart_id}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{chart_id}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{chart_id}-\1"', text)
    label = html.escape(title, quote=True)
    return text.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))  # counts and steps: no 2.5 attempts


def _height(fig: Figure, rows: int) -> None:
    fig.set_size_inches(WIDTH, max(1.6, 0.8 + 0.32 * rows))


def _barh(fig: Figure, counts: dict[str, int], unit: str, *, sort: bool = True) -> None:
    items = sorted(counts.items(), key=lambda kv: -kv[1]) if sort else list(counts.items())
    _height(fig, len(items))
    ax = fig.subplots()
    names = [k for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    bars = ax.barh(names, values, color=PALETTE[0])
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.set_xlabel(unit)
    ax.margins(x=0.08)
    _integer_ticks(ax.xaxis)


def _funnel(fig: Figure, data: ReportData) -> None:
    s = data.summary
    rows = [
        ("tasks", s.tasks, BASE),
        ("attempts", s.attempts, PALETTE[0]),
        ("attempts failed", s.attempts - s.attempts_passed, PALETTE[3]),
        ("refinements", s.refinements, PALETTE[1]),
        ("refinements accepted", s.refinements_verified, PASSED),
    ]
    _height(fig, len(rows))
    ax = fig.subplots()
    bars = ax.barh(
        [r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color=[r[2] for r in rows][::-1]
    )
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.set_xlabel("count")
    ax.margins(x=0.08)
    _integer_ticks(ax.xaxis)


def _acceptance(fig: Figure, data: ReportData) -> None:
    verdicts = [v for v in data.verdicts if v.total]
    statuses = list(dict.fromkeys(k for v in verdicts for k in v.statuses))
    rejected = [k for k in statuses if k != "passed"]
    colours = {k: REJECTED[i % len(REJECTED)] for i, k in enumerate(rejected)} | {"passed": PASSED}
    _height(fig, len(verdicts) + 1)
    ax = fig.subplots()
    names = [f"{v.kind}\n{v.accepted}/{v.total} accepted" for v in verdicts]
    left = [0] * len(verdicts)
    for status in statuses:
        widths = [v.statuses.get(status, 0) for v in verdicts]
        ax.barh(names, widths, left=left, color=colours[status], label=status)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("programs")
    _integer_ticks(ax.xaxis)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def _tokens(fig: Figure, data: ReportData) -> None:
    uses = [u for u in data.teacher if u.calls]
    _height(fig, 2 * len(uses))
    ax = fig.subplots()
    y = range(len(uses))
    bars_in = ax.barh(
        [i - 0.2 for i in y], [u.tokens_in for u in uses], 0.4, color=PALETTE[0], label="input"
    )
    bars_out = ax.barh(
        [i + 0.2 for i in y], [u.tokens_out for u in uses], 0.4, color=PALETTE[1], label="output"
    )
    for bars in (bars_in, bars_out):
        ax.bar_label(bars, labels=[f"{b.get_width():,.0f}" for b in bars], padding=3, fontsize=8)
    ax.set_yticks(list(y), [f"{u.kind}\n({u.calls} calls)" for u in uses])
    ax.invert_yaxis()
    ax.set_xlabel("tokens")
    ax.margins(x=0.1)
    ax.legend(loc="lower right", fontsize=8)


def _loss(fig: Figure, data: ReportData) -> None:
    ax = fig.subplots()
    curves = [(t.variant, t.curve) for t in data.training if t.curve is not None]
    for i, (variant, curve) in enumerate(curves):
        ax.plot(
            curve.steps,
            curve.losses,
            marker="o",
            markersize=3,
            color=PALETTE[i % len(PALETTE)],
            label=variant,
        )
    ax.set_xlabel("optimizer step")
    _integer_ticks(ax.xaxis)
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)


def pass_at(run: EvalRun) -> dict[int, float]:
    """pass@k before any refinement step (step 0)."""
    return next(s.pass_at for s in run.report.steps if s.step == 0)


def _passk(fig: Figure, runs: Sequence[EvalRun]) -> None:
    ks = sorted({k for r in runs for k in pass_at(r)})
    benchmarks = list(dict.fromkeys(r.benchmark for r in runs))
    models = list(dict.fromkeys(r.model for r in runs))
    colour = {m: (BASE if m == "base" else PALETTE[i % len(PALETTE)]) for i, m in enumerate(models)}
    fig.set_size_inches(WIDTH, 3.2)
    axes = fig.subplots(1, len(ks), sharey=True, squeeze=False)[0]
    width = 0.8 / len(models)
    for ax, k in zip(axes, ks, strict=True):
        for j, model in enumerate(models):
            xs, ys = [], []
            for b, bench in enumerate(benchmarks):
                run = next((r for r in runs if r.model == model and r.benchmark == bench), None)
                if run is not None and k in pass_at(run):
                    xs.append(b - 0.4 + width * (j + 0.5))
                    ys.append(100 * pass_at(run)[k])
            bars = ax.bar(xs, ys, width, color=colour[model], label=model)
            ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], padding=2, fontsize=8)
        ax.set_xticks(range(len(benchmarks)), benchmarks)
        ax.set_title(f"pass@{k}")
        ax.set_ylim(0, 105)
    axes[0].set_ylabel("% of tasks (hidden tests)")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def _refine(fig: Figure, run: EvalRun) -> None:
    r = run.report
    samples = max(1, r.tasks * r.n)
    base = next(s for s in r.steps if s.step == 0)
    ax = fig.subplots()
    ticks: set[float] = set()
    for arm, colour in (("refine", PALETTE[0]), ("resample", PALETTE[1])):
        steps = [base, *sorted((s for s in r.steps if s.arm == arm), key=lambda s: s.step)]
        xs = [s.calls_total / samples for s in steps]
        ticks.update(xs)
        ys = [100 * s.pass_at.get(1, 0.0) for s in steps]
        ax.plot(xs, ys, marker="o", color=colour, label=f"{arm} (steps 0-{steps[-1].step})")
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(
                f"{y:.1f}",
                (x, y),
                textcoords="offset points",
                xytext=(0, 5),
                ha="center",
                fontsize=8,
            )
    ax.set_xticks(sorted(ticks), [f"{x:.2f}" for x in sorted(ticks)])
    ax.set_xlabel("model calls per sample (equal budget at each step)")
    ax.set_ylabel("pass@1 % (hidden tests)")
    ax.legend(fontsize=8)
