"""Scoring: pass@k over sandboxed runs against hidden tests."""

from persd.evaluate.passk import mean_pass_at_k, pass_at_k
from persd.evaluate.score import ScoreReport, score_samples

__all__ = ["ScoreReport", "mean_pass_at_k", "pass_at_k", "score_samples"]
