"""``persd report``: the HTML run report, on the committed default run and on a bare one, and
once in a real headless Chromium (no console errors, every chart drawn, a screenshot kept)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persd.cli import app
from persd.report import collect, write_report
from persd.report.cases import side_by_side

pytest.importorskip("matplotlib", reason="persd[report] is not installed")

# The default run as recorded before the gate (it has the layout and numbers these tests name).
EXAMPLE = Path(__file__).parent / "data" / "report-example-run"
ARTIFACTS = Path(os.environ.get("PERSD_ARTIFACTS") or Path(__file__).parent / "artifacts")
HOSTILE = "<script>alert('pwned')</script></pre><img src=x onerror=alert(1)>"
ALL_CHARTS = {
    "funnel",
    "failures",
    "acceptance",
    "teacher-tokens",
    "examples",
    "loss",
    "passk",
    "refine-0",
}


class _Page(HTMLParser):
    """What a browser would build: tags, attributes, and which figures hold an <svg>."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.figures: dict[str, bool] = {}
        self._figure: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "figure":
            self._figure = dict(attrs).get("data-chart")
            self.figures[self._figure or ""] = False
        elif tag == "svg" and self._figure is not None:
            self.figures[self._figure] = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def _rewrite_jsonl(path: Path, edit) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(edit(r)) + "\n" for r in rows))


@pytest.fixture
def example_run(tmp_path: Path) -> Path:
    """The committed default run: stage files, data, evaluations; no weights, no events."""
    run = tmp_path / "default-run"
    shutil.copytree(EXAMPLE, run, ignore=shutil.ignore_patterns("report.html"))
    return run


def _add_logs_and_refinement_eval(run: Path) -> None:
    """What a run with training logs and refinement steps adds: a checkpoint's
    trainer_state.json and an evaluation with two refine / resample steps."""
    ckpt = run / "models" / "persd_combined" / "checkpoint-4"
    ckpt.mkdir(parents=True)
    history = [{"step": s, "loss": 0.9 / s, "learning_rate": 1e-4} for s in (1, 2, 3, 4)]
    (ckpt / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    base = json.loads((run / "eval" / "base" / "report.json").read_text())
    steps = [base["steps"][0]]
    for arm, gains in (("refine", (0.05, 0.075)), ("resample", (0.025, 0.025))):
        for step, gain in enumerate(gains, 1):
            p1 = base["steps"][0]["pass_at"]["1"] + gain
            steps.append(
                {
                    "step": step,
                    "arm": arm,
                    "pass_at": {"1": p1},
                    "seen_pass_rate": p1,
                    "calls": 8 - 2 * step,
                    "calls_total": 40 + 8 * step,
                }
            )
    out = run / "eval" / "base" / "mbpp-test"
    out.mkdir()
    refined = base | {"benchmark": "mbpp-test", "refine_steps": 2, "steps": steps}
    (out / "report.json").write_text(json.dumps(refined))


@pytest.fixture
def full_run(example_run: Path) -> Path:
    _add_logs_and_refinement_eval(example_run)
    return example_run


def test_counts_match_the_stage_files_and_the_runs_own_summary(example_run: Path) -> None:
    data = collect(example_run)
    for stage in data.stages:
        assert stage.rows == _lines(example_run / stage.file), stage
    saved = json.loads((example_run / "summary.json").read_text())
    s = data.summary
    for key in (
        "attempts",
        "attempts_passed",
        "failures",
        "solutions",
        "solutions_verified",
        "refinements",
        "refinements_verified",
        "examples",
        "teacher_tokens_in",
        "teacher_tokens_out",
    ):
        assert getattr(s, key) == saved[key], key
    page = write_report(example_run).read_text()
    assert "16/40" in page and "6/24" in page  # attempts passed, refinements accepted
    assert "18,057 / 7,010" in page  # teacher tokens in / out
    assert {(r.model, r.benchmark) for r in data.evals} == {
        ("base", "humaneval (40 tasks)"),
        ("persd_combined", "humaneval (40 tasks)"),
        ("base", "humaneval (164 tasks)"),
        ("persd_combined", "humaneval (164 tasks)"),
    }
    assert "80.0% → 52.5%" in page and "53.0% → 42.1%" in page


def test_every_chart_is_drawn_when_the_run_has_its_data(full_run: Path) -> None:
    page = _Page(write_report(full_run).read_text())
    assert set(page.figures) == ALL_CHARTS
    assert all(page.figures.values()), page.figures  # each figure holds its <svg>
    assert "script" not in page.tags
    ids = [v for k, v in page.attrs if k == "id"]
    assert len(ids) == len(set(ids)), "inline SVGs must not share ids"


def test_a_run_without_training_logs_or_refinement_steps_says_so(example_run: Path) -> None:
    page_text = write_report(example_run).read_text()
    page = _Page(page_text)
    assert set(page.figures) == ALL_CHARTS - {"loss", "refine-0"}
    assert "no training logs" in page_text
    assert "No evaluation ran refinement steps" in page_text
    assert "0.1979" in page_text  # train_summary.json's final loss is still shown


def test_the_feedback_shown_is_what_the_teacher_read(example_run: Path) -> None:
    data = collect(example_run, cases=3)
    assert [c.accepted for c in data.cases] == [True, True, False]  # and one rejected
    refinements = {
        r["id"]: r
        for r in map(json.loads, (example_run / "refinements.jsonl").read_text().splitlines())
    }
    for case in data.cases:
        prompt = "\n".join(m["content"] for m in refinements[case.refinement_id]["messages"])
        assert case.feedback in prompt


def test_model_written_text_is_escaped_everywhere(example_run: Path) -> None:
    first = collect(example_run, cases=1).cases[0]

    def poison(row: dict) -> dict:
        if row["id"] == first.attempt_id:
            return row | {"prompt": HOSTILE, "code": HOSTILE + "\ndef f(): pass"}
        return row

    _rewrite_jsonl(example_run / "attempts.jsonl", poison)
    hostile_model = example_run / "eval" / "<b onmouseover=alert(2)>x" / "humaneval"
    hostile_model.mkdir(parents=True)
    shutil.copy(example_run / "eval" / "base" / "report.json", hostile_model / "report.json")
    text = write_report(example_run, cases=1).read_text()
    page = _Page(text)
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    assert not [k for k, _ in page.attrs if k.startswith("on")]
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in text  # shown, as text
    assert "&lt;b onmouseover=alert(2)&gt;x" in text  # in the table and the chart's labels


def test_a_nearly_empty_run_gets_a_report_with_notes(tmp_path: Path) -> None:
    run = tmp_path / "fresh"
    run.mkdir()
    shutil.copy(EXAMPLE / "config.yaml", run / "config.yaml")
    lines = (EXAMPLE / "attempts.jsonl").read_text().splitlines(keepends=True)[:5]
    (run / "attempts.jsonl").write_text("".join(lines))
    text = write_report(run).read_text()
    assert set(_Page(text).figures) == {"funnel"}
    for note in (
        "No executed attempts yet",
        "No training sets yet",
        "not trained",
        "No evaluation reports",
        "No refinements yet",
    ):
        assert note in text, note
    assert collect(run).stages[0].rows == 5


def test_a_run_still_writing_is_read_as_it_is_and_left_untouched(example_run: Path) -> None:
    attempts = example_run / "attempts.jsonl"
    with attempts.open("a") as f:
        f.write('{"id": "MBPP/999#r0a0", "task_id": "MB')  # a stage mid-way through a line
    before = attempts.read_bytes()
    data = collect(example_run)
    assert attempts.read_bytes() == before  # the writer finishes its line, not the report
    assert data.stages[0].rows == 40


def test_training_loss_is_read_from_tensorboard_events(example_run: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(example_run / "models" / "persd_combined" / "runs" / "Nov24_x"))
    for step, loss in ((1, 1.5), (2, 1.0), (3, 0.7)):
        value = summary_pb2.Summary.Value(tag="train/loss", simple_value=loss)
        summary = summary_pb2.Summary(value=[value])
        writer.add_event(event_pb2.Event(step=step, wall_time=time.time(), summary=summary))
    writer.close()
    run = next(t for t in collect(example_run).training if t.variant == "persd_combined")
    assert run.curve is not None and run.curve.source == "TensorBoard"
    assert run.curve.steps == [1, 2, 3] and run.curve.losses == pytest.approx([1.5, 1.0, 0.7])


def test_the_same_run_writes_the_same_page(full_run: Path, tmp_path: Path) -> None:
    a = write_report(full_run, tmp_path / "a.html").read_bytes()
    b = write_report(full_run, tmp_path / "b.html").read_bytes()
    assert a == b  # a committed report changes only when the run does


def test_diff_pairs_changed_lines_and_pads_the_rest() -> None:
    rows = side_by_side("a\nb\nc\n", "a\nB\nc\nd\n")
    assert [(r.kind, r.old_no, r.old, r.new_no, r.new) for r in rows] == [
        ("equal", 1, "a", 1, "a"),
        ("replace", 2, "b", 2, "B"),
        ("equal", 3, "c", 3, "c"),
        ("insert", None, "", 4, "d"),
    ]


def test_cli_writes_the_report_and_prints_its_path(example_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "r.html"
    result = CliRunner().invoke(
        app, ["report", str(example_run), "--out", str(out), "--cases", "1"]
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output.replace("\n", "")
    assert out.read_text().count('<article class="case"') == 1


def test_a_path_that_is_not_a_run_is_one_line(tmp_path: Path) -> None:
    code = "from persd.cli import main; main()"
    for path, says in (
        (tmp_path / "nope", "no such directory"),
        (tmp_path, "not a run directory (no config.yaml)"),
    ):
        r = subprocess.run(
            [sys.executable, "-c", code, "report", str(path)], capture_output=True, text=True
        )
        assert r.returncode == 1
        assert f"error: {path}: {says}" in r.stderr
        assert "Traceback" not in r.stderr + r.stdout


# ---- in a real browser ------------------------------------------------------------------

APT_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium: found, or installed with apt-get where this runs as root."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("no chromium, and apt-get cannot install it here (needs root and apt-get)")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    t0 = time.monotonic()
    try:
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        ):
            left = APT_TIMEOUT_S - (time.monotonic() - t0)
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=left)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                pytest.skip(f"`{' '.join(cmd)}` failed: {' '.join(tail)}")
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing chromium took over {APT_TIMEOUT_S} s")
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("apt-get installed chromium but no `chromium` is on PATH")
    return path


def _headless(chromium: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    # The background-networking flags keep Chromium from dialling out at start (this machine
    # has no network; the page needs none). No GPU, no sandbox: CI runs as root in a container.
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_lines(stderr: str) -> list[str]:
    # Chromium logs each console message (errors, CSP refusals, failed loads) as
    # "[...:INFO:CONSOLE(line)] "message", source: ...". The page runs no script, so any is one.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_the_report_renders_in_headless_chromium(
    chromium: str, full_run: Path, tmp_path: Path
) -> None:
    report = write_report(full_run)
    # A control first: a page that does log an error must be caught, or the check means nothing.
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><script>console.error('control error')</script>")
    control = _headless(chromium, bad, tmp_path / "p0", "--dump-dom")
    assert any("control error" in line for line in _console_lines(control.stderr)), control.stderr

    dom = _headless(chromium, report, tmp_path / "p1", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_lines(dom.stderr) == []
    page = _Page(dom.stdout)
    assert set(page.figures) == ALL_CHARTS and all(page.figures.values()), page.figures
    assert re.search(r"<h1>persd run report", dom.stdout)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    taken = _headless(
        chromium, report, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1280,9000"
    )
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]
    assert _console_lines(taken.stderr) == []
    shutil.copy(report, ARTIFACTS / "report.html")


def test_a_multi_round_run_gets_a_rounds_table(example_run: Path, tmp_path: Path) -> None:
    summary = json.loads((example_run / "summary.json").read_text())
    summary["rounds"] = [
        {
            "round": r,
            "tasks": t,
            "attempts": t,
            "attempts_passed": p,
            "refinements": t - p,
            "refinements_verified": v,
            "examples": 2 * v,
            "trained": True,
            "training": "continue",
            "tasks_mode": "failed",
        }
        for r, t, p, v in [(0, 40, 16, 6), (1, 24, 5, 3)]
    ]
    (example_run / "summary.json").write_text(json.dumps(summary))
    page = write_report(example_run, tmp_path / "r.html").read_text()
    assert 'id="rounds"' in page and "training: continue" in page
    assert "<td>1</td><td>24</td><td>5/24</td>" in page


def _no_gain_gate():
    from persd.evaluate.paired import Paired
    from persd.pipeline.rundir import Candidate, GateResult, GateRow

    row = GateRow(
        candidate=Candidate(variant="persd_combined", checkpoint="final", path="m/final"),
        vs_base=Paired(tasks=40, base_passed=13, passed=13, gained=0, lost=0, p_value=1.0),
        decision="best of its variant; no gain",
    )
    return GateResult(
        validation_tasks=40,
        base_passed=13,
        rule="gained - lost >= 1",
        rows=[row],
        kept="base",
        verdict="the base is the result: no trained model cleared the rule",
    )


def _gated(run: Path) -> Path:
    """The example run as the default run ends when training gains nothing: the gate keeps
    the base, while the rejected model scored higher on the benchmark sample (there: lower;
    the labels must not depend on which way it went)."""
    summary = json.loads((run / "summary.json").read_text())
    gate = _no_gain_gate()
    summary |= {"gate": gate.model_dump(mode="json"), "kept": "base", "validation_tasks": 40}
    summary.pop("result", None)  # as a summary.json written before the field existed
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_the_first_card_is_the_runs_decision_and_rejected_models_say_so(
    example_run: Path,
) -> None:
    page = write_report(_gated(example_run)).read_text()
    first = page.index('<div class="card">')
    card = page[first : page.index("</div></div>", first)]
    assert '<div class="label">result</div><div class="value">base</div>' in card
    assert "no trained model cleared the rule" in card
    # The benchmark card leads with the kept model; the rejected one is named as such.
    assert "pass@1 humaneval (40 tasks): base (the result)" in page
    assert "persd_combined 52.5% (rejected by the gate)" in page
    assert "80.0% → 52.5%" not in page


def test_the_summary_table_leads_with_the_result_and_labels_rejected_models() -> None:
    from rich.console import Console

    from persd.cli.run import summary_table
    from persd.pipeline.rundir import RunSummary

    saved = json.loads((EXAMPLE / "summary.json").read_text())
    s = RunSummary.model_validate(saved)
    s = s.model_copy(
        update={"result": "the base is the result: ...", "kept": "base", "gate": _no_gain_gate()}
    )
    console = Console(record=True, width=200)
    console.print(summary_table(s))
    lines = [ln for ln in console.export_text().splitlines() if "│" in ln]
    assert "result" in lines[0] and "base" in lines[0]
    assert any("persd_combined (rejected by the gate)" in ln for ln in lines)
    assert any("gate rule (to replace the base)" in ln for ln in lines)
    assert not any("failed: failed" in ln for ln in lines)
    assert any("local, no cost" in ln for ln in lines) == s.teacher_local


def test_the_noise_floor_is_said_beside_the_comparisons(example_run: Path) -> None:
    """A run scored on llama.cpp shows that path's measured floor, scaled to each paired
    comparison (the gate's 40 validation tasks, the benchmark's 164), in the table and the
    report; a backend never measured shows none."""
    from rich.console import Console

    from persd.cli.run import summary_table
    from persd.evaluate.floor import floor_for
    from persd.evaluate.paired import Paired
    from persd.pipeline.rundir import RunSummary

    floor = floor_for("llama_cpp")
    assert floor is not None and floor.flipped > 0 and floor.of > floor.flipped
    vs = Paired(tasks=164, base_passed=84, passed=86, gained=5, lost=3, p_value=0.73)
    extra = {"versus_base": {"persd_combined": {"humaneval": vs.model_dump(mode="json")}}}
    summary = json.loads((_gated(example_run) / "summary.json").read_text())
    (example_run / "summary.json").write_text(
        json.dumps(summary | extra | {"eval_backend": "llama_cpp"})
    )
    s = RunSummary.model_validate_json((example_run / "summary.json").read_text())
    console = Console(record=True, width=250)
    console.print(summary_table(s))
    row = next(ln for ln in console.export_text().splitlines() if "noise floor" in ln)
    assert f"{floor.flipped} of {floor.of}" in row and "of 40" in row and "of 164" in row
    assert "Noise floor:" in write_report(example_run).read_text()
    assert s.model_copy(update={"eval_backend": "vllm"}).floor_note() is None
