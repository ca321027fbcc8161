"""The run report: one self-contained HTML page with tables and charts, built from a run
directory alone (``persd report RUN_DIR``; ``persd run`` writes one at the end).

``collect`` reads the run into ``ReportData``, ``charts`` draws it (matplotlib, inline SVG),
``html`` lays it out (Jinja2, autoescaped). Nothing on the page is fetched or run.
"""

from __future__ import annotations

import os
from pathlib import Path

from persd.pipeline.rundir import RunPaths
from persd.report.collect import collect
from persd.report.data import ReportData, ReportError

__all__ = ["ReportData", "ReportError", "collect", "write_report"]


def write_report(run_dir: Path, out: Path | None = None, *, cases: int = 3) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``).

    Raises ``ReportError`` (a ``PersdError``) for a path that is not a run directory, or when
    the ``report`` extra (matplotlib, jinja2) is not installed.
    """
    from persd.report.charts import draw_charts
    from persd.report.html import render_html

    run_dir = Path(run_dir)
    data = collect(run_dir, cases=cases)
    page = render_html(data, draw_charts(data))
    out = Path(out) if out is not None else RunPaths(run_dir).report
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)  # a reader never sees half a page
    return out
