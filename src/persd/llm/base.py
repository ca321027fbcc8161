"""The two protocols every model backend implements, and the records they exchange.

A *student* is local weights we sample many programs from (and later fine-tune); a *teacher*
is a chat model behind an OpenAI-compatible HTTP API. Pipeline stages see only these
protocols, so a backend can change (transformers, llama.cpp, vLLM; OpenAI, a vLLM server, a
managed llama.cpp server) without a stage knowing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Message(_Record):
    """One chat turn."""

    role: Role
    content: str


# A student prompt is either raw text to continue (base models, HumanEval-style completion)
# or a conversation that the backend renders with the model's own chat template.
Prompt = str | tuple[Message, ...]


class SamplingParams(_Record):
    """How to sample. Shared by students and teachers so caches key on one shape."""

    n: int = Field(1, ge=1, description="samples per prompt")
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, ge=1)
    stop: tuple[str, ...] = ()
    seed: int = 0
    # A chat reply's program is final once a closed python block defines this entry point
    # (``extract.answer_complete``); a backend may stop generating there. Tokens before that
    # point are the same either way, so the extracted program is too: it saves only the prose
    # after the code. Backends that cannot stop early ignore it.
    stop_when_answered: str | None = None


class Generation(_Record):
    """One sampled continuation of one prompt."""

    text: str  # raw model output, stop sequence removed
    tokens_in: int
    tokens_out: int
    finish_reason: FinishReason


class TeacherReply(_Record):
    """One teacher completion, with what it cost and where it came from."""

    text: str
    model: str
    tokens_in: int
    tokens_out: int
    finish_reason: FinishReason
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False  # served from the cache: no HTTP call was made for it
    cache_key: str = ""


@runtime_checkable
class Student(Protocol):
    """Local weights that sample programs."""

    @property
    def model_id(self) -> str:
        """What was sampled: base model name, plus adapter/round when there is one."""
        ...

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """``params.n`` generations for each prompt, in prompt order."""
        ...

    def close(self) -> None:
        """Free the weights (and any server or thread the backend started)."""
        ...


@runtime_checkable
class Teacher(Protocol):
    """A chat model behind an API, cached and budgeted."""

    @property
    def model_id(self) -> str: ...

    async def chat(self, messages: Sequence[Message], params: SamplingParams) -> list[TeacherReply]:
        """``params.n`` replies to one conversation."""
        ...

    async def aclose(self) -> None: ...


def adapter_label(path: str | Path) -> str:
    """How an adapter shows in a model id: its path below the run's ``models/`` directory
    (``r1/persd_combined/final``), so students of different rounds or variants differ in the
    records without machine-specific absolute paths; otherwise its file or directory name."""
    parts = Path(path).parts
    if "models" in parts:
        start = len(parts) - parts[::-1].index("models")
        return "/".join(parts[start:])
    return Path(path).name


def chunk_size(student: Student) -> int:
    """Tasks per journal entry: the unit of resume. A batching backend gets several times its
    parallel sequences, so that the last, longest replies of a chunk leave few streams idle."""
    return max(8, 4 * int(getattr(student, "parallel", 2)))


def generate_each(
    student: Student,
    prompts: Sequence[Prompt],
    params: Sequence[SamplingParams],
    on_done: Callable[[int], None] | None = None,
) -> list[list[Generation]]:
    """``params[i].n`` generations of ``prompts[i]`` under its own settings (a task's stop
    sequences, its entry point for ``stop_when_answered``); ``on_done(i)`` once prompt ``i``
    is finished.

    A backend that decodes many sequences at once with their own stop conditions
    (``generate_each``, llama.cpp) gets them all in one call. Others get one call per run of
    equal settings; ``stop_when_answered`` only lets a backend stop early, so one that cannot
    (``stops_when_answered`` false) is asked without it and batches across tasks.
    """
    each = getattr(student, "generate_each", None)
    if each is not None:
        return each(prompts, params, on_done)
    if not getattr(student, "stops_when_answered", False):
        params = [p.model_copy(update={"stop_when_answered": None}) for p in params]
    out: list[list[Generation]] = []
    start = 0
    while start < len(prompts):
        end = start + 1
        while end < len(prompts) and params[end] == params[start]:
            end += 1
        out += student.generate(prompts[start:end], params[start])
        if on_done is not None:
            for i in range(start, end):
                on_done(i)
        start = end
    return out
