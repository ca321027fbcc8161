"""Teacher log-probabilities over the student's own samples, for ``persd_onpolicy`` rows.

The teacher reads its privileged turn (the row's ``teacher_prompt``: the student's prompt plus
the sample's execution feedback and a verified solution) and then the student's sample, token
by token; at each sample position its top-k next-token log-probabilities are kept. This is one
forward pass per row, never generation: the tokens are the student's.

The two models must share a tokenizer (Qwen2.5-Coder 1.5B and 0.5B do): a teacher score is for a
token id of the student's vocabulary. Both sides tokenise the completion, and a mismatch is an
error naming the row rather than a silently shifted target.

Scores are cached in a JSONL file, one line per row, keyed by everything that determines them
(the teacher's weights file, k, the teacher's input ids), appended and flushed row by row: an
interrupted scoring pass resumes where it stopped and a retraining reuses every score.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persd.errors import DataError, PersdError
from persd.jsonl import json_object, read_text
from persd.llm.base import Message
from persd.llm.render import ChatRenderer
from persd.records import Example
from persd.train.config import TrainConfig, TrainError
from persd.train.progress import Progress


class ScoreError(PersdError):
    """Teacher scores cannot be computed or read: names the row, model or file."""


@dataclass(frozen=True)
class RowScores:
    """The teacher's view of one row's completion tokens: at position t (predicting completion
    token t), the ids of its top-k tokens and their log-probabilities."""

    completion_ids: list[int]
    topk_ids: list[list[int]]
    topk_logprobs: list[list[float]]
    teacher_tokens: int  # tokens the teacher read for this row (its prompt + the completion)


def completion_ids(renderer: ChatRenderer, ex: Example) -> list[int]:
    """The completion tokens of a chat row exactly as the trainer builds them (``to_dataset``):
    the student's sample and its end-of-turn."""
    turn = [Message(role="user", content=ex.prompt)]
    return renderer.encode(renderer.completion_text(turn, ex.completion), first=False)


def teacher_ids(renderer: ChatRenderer, ex: Example) -> list[int]:
    """The teacher's prompt ids: its privileged user turn, then the assistant header."""
    if not ex.teacher_prompt:
        raise ScoreError(f"row {ex.id}: has no teacher_prompt to score it with")
    return renderer.prompt_ids([Message(role="user", content=ex.teacher_prompt)])


def score_key(teacher: str, top_k: int, prompt: Sequence[int], completion: Sequence[int]) -> str:
    blob = json.dumps([teacher, top_k, list(prompt), list(completion)], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ScoreCache:
    """The cached scores in ``path`` (read once), and appending new ones as they are made."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._rows: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return
        lines = read_text(self.path, "a teacher score cache").splitlines()
        if lines and not lines[-1].rstrip().endswith("}"):
            # A write cut short by a crash: that row is scored again, the rest are kept.
            lines.pop()
            self.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                data = json_object(raw, self.path, number)
                if not isinstance(data.get("key"), str):
                    raise DataError(self.path, number, "key", "is missing")
                self._rows[data["key"]] = data

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> RowScores | None:
        data = self._rows.get(key)
        if data is None:
            return None
        return RowScores(
            completion_ids=data["completion_ids"],
            topk_ids=data["topk_ids"],
            topk_logprobs=data["topk_logprobs"],
            teacher_tokens=int(data["teacher_tokens"]),
        )

    def put(self, key: str, row_id: str, scores: RowScores) -> None:
        data = {
            "key": key,
            "row": row_id,
            "teacher_tokens": scores.teacher_tokens,
            "completion_ids": scores.completion_ids,
            "topk_ids": scores.topk_ids,
            "topk_logprobs": scores.topk_logprobs,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(data, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._rows[key] = data


@dataclass(frozen=True)
class Scored:
    """Every on-policy row's scores, in row order, and what it cost."""

    scores: list[RowScores]
    scored_now: int  # rows the teacher read in this call (the rest came from the cache)
    teacher_tokens: int  # all rows, cached or not: the teacher compute the training used


def score_rows(
    rows: Sequence[Example],
    *,
    teacher: str,
    student_renderer: ChatRenderer,
    top_k: int,
    cache_path: Path,
    threads: int | None = None,
    on_row: Callable[[], None] | None = None,
) -> Scored:
    """The teacher's top-k log-probs over each row's completion; cached rows are not re-read.

    The teacher is loaded only if some row is missing from the cache."""
    from persd.llm.render import renderer_for

    cache = ScoreCache(cache_path)
    t_renderer = renderer_for(teacher)
    plans = []
    for ex in rows:
        ids = completion_ids(student_renderer, ex)
        if completion_ids(t_renderer, ex) != ids:
            raise ScoreError(
                f"row {ex.id}: teacher {teacher} tokenises the completion differently from the "
                "student; persd_onpolicy needs a teacher that shares the student's tokenizer"
            )
        prompt = teacher_ids(t_renderer, ex)
        plans.append((ex, prompt, ids, score_key(_weights_name(teacher), top_k, prompt, ids)))
    missing = [p for p in plans if cache.get(p[3]) is None]
    if missing:
        model = _load_teacher(teacher, threads)
        for ex, prompt, ids, key in missing:
            cache.put(key, ex.id, forward_topk(model, prompt, ids, top_k))
            if on_row is not None:
                on_row()
        del model
    scores = []
    for _, _, _, key in plans:
        got = cache.get(key)
        assert got is not None
        scores.append(got)
    return Scored(
        scores=scores,
        scored_now=len(missing),
        teacher_tokens=sum(s.teacher_tokens for s in scores),
    )


def forward_topk(model: Any, prompt: Sequence[int], completion: Sequence[int], k: int) -> RowScores:
    """One forward pass over ``prompt + completion``; the top-k log-probs at each position that
    predicts a completion token (the logits at position i predict token i + 1)."""
    import torch

    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        # Only the last len(completion) + 1 positions need the LM head (151k columns for Qwen).
        logits = model(input_ids=ids, logits_to_keep=len(completion) + 1).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        values, indices = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    return RowScores(
        completion_ids=list(completion),
        topk_ids=indices.tolist(),
        topk_logprobs=[[round(v, 5) for v in row] for row in values.tolist()],
        teacher_tokens=len(prompt) + len(completion),
    )


def _weights_name(teacher: str) -> str:
    """What identifies the teacher's weights in a cache key: the resolved file or directory."""
    from persd.llm.registry import resolve_model

    resolved = resolve_model(teacher)
    return str(resolved.path.name if resolved.path is not None else resolved.hub_id)


def _load_teacher(teacher: str, threads: int | None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from persd.llm.student_hf import resolve_base

    if threads:
        torch.set_num_threads(threads)
    _, ref = resolve_base(teacher)  # a GGUF is dequantised once to safetensors, as for training
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ScoreError(f"{teacher}: cannot load the teacher to score samples: {first}") from None
    model.eval()
    return model


def scores_for_training(
    config: TrainConfig,
    examples: Sequence[Example],
    renderer: ChatRenderer,
    out_dir: Path,
    progress: Progress | None,
) -> Scored:
    """The teacher's scores of every on-policy row (``persd.train.teacher_scores``), from the
    cache where it has them; the teacher is loaded only for rows it lacks."""
    settings = config.onpolicy
    if config.format != "chat":
        raise TrainError(
            "persd_onpolicy rows need format 'chat' (the teacher's turn is a chat turn)"
        )
    if settings.teacher is None:
        raise TrainError(
            "persd_onpolicy rows need a teacher to score them: set train.onpolicy.teacher "
            "(persd train --teacher NAME), a model sharing the student's tokenizer"
        )
    rows = [ex for ex in examples if ex.teacher_prompt]
    cache = Path(settings.cache) if settings.cache else out_dir / "teacher_scores.jsonl"
    tick = progress.start("score", len(rows)) if progress else None
    scored = score_rows(
        rows,
        teacher=settings.teacher,
        student_renderer=renderer,
        top_k=settings.top_k,
        cache_path=cache,
        threads=config.threads,
        on_row=(lambda: tick(1)) if tick else None,
    )
    if progress:
        progress.note(
            f"teacher scores: {len(rows)} rows, {scored.scored_now} scored now, "
            f"{scored.teacher_tokens} teacher tokens ({cache})"
        )
    return scored


def per_row(examples: Sequence[Example], scores: Sequence[RowScores]) -> list[RowScores | None]:
    """One entry per row: the on-policy rows' scores in order, None for plain SFT rows."""
    it = iter(scores)
    return [next(it) if ex.teacher_prompt else None for ex in examples]
