"""Training rows: ``Example`` JSONL files in, a TRL prompt-completion ``Dataset`` out.

TRL computes the loss on the completion only for prompt-completion datasets, in both shapes:

- ``chat``: rendered and tokenised by the student's ``ChatRenderer`` (``persd.llm.render``), the
  one every serving backend uses: the prompt ids are the ids the student is sampled from, and
  the end-of-turn token the template writes after the assistant turn (``<|im_end|>`` for Qwen2 /
  SmolLM2) is a completion token, so the model learns to stop.
- ``base``: tokenised here, prompt and completion separately, then joined, with the EOS
  appended (as the paper did). Tokenising ``prompt + completion`` as one string, as TRL does for
  plain text, lets BPE merge across the boundary (Qwen2.5 has one token for a period, closing
  docstring quotes and a blank line): the prompt's last characters would be learnt as
  completion, on a token sequence the model never sees when sampled from the prompt alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from persd.errors import DataError
from persd.jsonl import invalid, json_objects
from persd.records import Example

if TYPE_CHECKING:
    from datasets import Dataset

    from persd.llm.render import ChatRenderer


def read_examples(path: Path) -> list[Example]:
    """All rows of one JSONL file of ``Example`` records; a bad row is a DataError naming it."""
    rows = []
    for number, data in json_objects(path, "a JSONL of training rows"):
        try:
            example = Example.model_validate(data)
        except ValidationError as e:
            raise invalid(path, number, e) from None
        if not example.completion.strip():
            raise DataError(path, number, "completion", "is empty (nothing to learn)")
        rows.append(example)
    return rows


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
    examples: Sequence[Example],
    fmt: Literal["chat", "base"],
    tokenizer: Any,
    renderer: ChatRenderer | None = None,
    max_len: int | None = None,
) -> Dataset:
    """What SFTTrainer takes: token ids with a completion mask (TRL turns the mask into -100
    labels on the prompt), so the ids are ours, not TRL's own tokenisation.

    The ``renderer`` (``persd.llm.render``) is the student's serving tokenizer. ``chat``: the
    user turn becomes exactly the prompt ids every serving backend feeds the student, the
    completion the assistant turn with its end-of-turn token (learnt: the model must stop).
    ``base``: prompt and completion tokenised apart, the EOS appended, as the paper did.
    ``max_len``: rows are cut to it here (TRL cuts only unpacked batches itself).
    """
    from datasets import Dataset

    from persd.llm.base import Message

    ids, masks = [], []
    for ex in examples:
        if renderer is None:  # a model without a persd renderer: its own tokenizer, BOS and EOS
            prompt = tokenizer(ex.prompt)["input_ids"]
            completion = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
            completion.append(tokenizer.eos_token_id)
        elif fmt == "chat":
            turn = [Message(role="user", content=ex.prompt)]
            prompt = renderer.prompt_ids(turn)
            completion = renderer.encode(renderer.completion_text(turn, ex.completion), first=False)
        else:
            prompt = renderer.encode(ex.prompt, first=True)
            completion = renderer.encode(ex.completion, first=False) + [tokenizer.eos_token_id]
        # Learnt: the completion and its end, so it stops. Cut at ``max_len`` as TRL cuts (a
        # row left with no completion token is then dropped by TRL and counted by the caller).
        ids.append((prompt + completion)[:max_len])
        masks.append(([0] * len(prompt) + [1] * len(completion))[:max_len])
    return Dataset.from_dict({"input_ids": ids, "completion_mask": masks})


def describe(examples: Sequence[Example]) -> dict[str, int]:
    """Rows per variant, for the summary: what this model was trained on."""
    counts: dict[str, int] = {}
    for ex in examples:
        counts[ex.variant] = counts.get(ex.variant, 0) + 1
    return counts
