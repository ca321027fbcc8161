"""Training rows: ``Example`` JSONL files in, a TRL prompt-completion ``Dataset`` out.

TRL computes the loss on the completion only for prompt-completion datasets, in both shapes:

- ``chat``: ``prompt=[{"role": "user", ...}]``, ``completion=[{"role": "assistant", ...}]``; TRL
  renders them with the model's chat template, so the end-of-turn token the template writes after
  the assistant turn (``<|im_end|>`` for Qwen2 / SmolLM2) is a completion token: the model learns
  to stop, as it must when sampled through the same template.
- ``base``: tokenised here, prompt and completion separately, then joined, with the EOS
  appended (as the paper did). Tokenising ``prompt + completion`` as one string, as TRL does for
  plain text, lets BPE merge across the boundary (Qwen2.5 has one token for a period, closing
  docstring quotes and a blank line): the prompt's last characters would be learnt as
  completion, on a token sequence the model never sees when sampled from the prompt alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from persd.errors import DataError
from persd.records import Example

if TYPE_CHECKING:
    from datasets import Dataset


def read_examples(path: Path) -> list[Example]:
    """All rows of one JSONL file of ``Example`` records; a bad row is a DataError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, None, None, "no such file (a JSONL of training rows)") from None
    except OSError as e:
        raise DataError(path, None, None, f"cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(path, None, None, "is not UTF-8 text (a JSONL of training rows)") from None
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            rows.append(_parse_line(raw, path, number))
    return rows


def _parse_line(raw: str, path: Path, number: int) -> Example:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(path, number, None, f"not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise DataError(path, number, None, f"not a JSON object (got {type(data).__name__})")
    try:
        example = Example.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = "is missing" if first["type"] == "missing" else first["msg"].lower()
        raise DataError(path, number, field, message) from None
    if not example.completion.strip():
        raise DataError(path, number, "completion", "is empty (nothing to learn)")
    return example


def load_examples(paths: Sequence[Path]) -> list[Example]:
    """The rows of every file, in order; no rows at all is an error (training on nothing)."""
    if not paths:
        raise DataError("<no data files>", None, None, "give at least one JSONL of training rows")
    rows: list[Example] = []
    for path in paths:
        rows += read_examples(Path(path))
    if not rows:
        names = ", ".join(str(p) for p in paths)
        raise DataError(names, None, None, "holds no training rows (one JSON object per line)")
    return rows


def to_dataset(
    examples: Sequence[Example], fmt: Literal["chat", "base"], tokenizer: Any
) -> Dataset:
    """What SFTTrainer takes: conversational prompt-completion rows for ``chat``; for ``base``,
    token ids with a completion mask (TRL turns the mask into -100 labels on the prompt)."""
    from datasets import Dataset

    if fmt == "chat":
        return Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": ex.prompt}] for ex in examples],
                "completion": [
                    [{"role": "assistant", "content": ex.completion}] for ex in examples
                ],
            }
        )
    ids, masks = [], []
    for ex in examples:
        prompt = tokenizer(ex.prompt)["input_ids"]  # with BOS where the vocabulary uses one
        completion = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
        completion.append(tokenizer.eos_token_id)  # learnt: the model must stop by itself
        ids.append(prompt + completion)
        masks.append([0] * len(prompt) + [1] * len(completion))
    return Dataset.from_dict({"input_ids": ids, "completion_mask": masks})


def describe(examples: Sequence[Example]) -> dict[str, int]:
    """Rows per variant, for the summary: what this model was trained on."""
    counts: dict[str, int] = {}
    for ex in examples:
        counts[ex.variant] = counts.get(ex.variant, 0) + 1
    return counts
