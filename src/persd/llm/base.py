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
    # Stop once the reply holds this many lines (a teacher streams the reply and closes it
    # there: ``llm.teacher_http``); a reply is cut after its last newline. Backends that
    # cannot stop early ignore it; callers must read only the first lines' worth.
    max_lines: int | None = Field(None, ge=1)


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
    """Local weights that sample programs.

    What a caller may ask beyond ``generate`` is declared here, not probed; a backend that
    subclasses this protocol inherits the defaults and overrides what it does better:
    ``parallel`` (sequences it decodes at once), ``stops_when_answered`` (whether it honours
    ``SamplingParams.stop_when_answered``), ``generate_each`` (prompts under their own
    settings), and ``backend`` / ``weights`` (what an evaluation report says it scored)."""

    parallel: int = 2
    stops_when_answered: bool = False
    backend: str | None = None
    weights: str | None = None

    model_id: str  # what was sampled: base model name, plus adapter/round when there is one

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """``params.n`` generations for each prompt, in prompt order."""
        ...

    def close(self) -> None:
        """Free the weights (and any server or thread the backend started)."""
        ...

    def generate_each(
        self,
        prompts: Sequence[Prompt],
        params: Sequence[SamplingParams],
        on_done: Callable[[int], None] | None = None,
    ) -> list[list[Generation]]:
        """``params[i].n`` generations of ``prompts[i]`` under its own settings (a task's stop
        sequences, its entry point for ``stop_when_answered``); ``on_done(i)`` once prompt
        ``i`` is finished.

        This default makes one ``generate`` call per run of equal settings; a backend that
        decodes many sequences with their own stop conditions (llama.cpp) takes them all in
        one call instead. ``stop_when_answered`` only lets a backend stop early, so one that
        cannot (``stops_when_answered`` false) is asked without it and batches across tasks.
        """
        if not self.stops_when_answered:
            params = [p.model_copy(update={"stop_when_answered": None}) for p in params]
        out: list[list[Generation]] = []
        start = 0
        while start < len(prompts):
            end = start + 1
            while end < len(prompts) and params[end] == params[start]:
                end += 1
            out += self.generate(prompts[start:end], params[start])
            if on_done is not None:
                for i in range(start, end):
                    on_done(i)
            start = end
        return out


@runtime_checkable
class Teacher(Protocol):
    """A chat model behind an API, cached and budgeted.

    What a stage may ask of it beyond ``chat`` is declared here, not probed: ``concurrency``
    (requests it answers at once) and ``lanes`` / ``lane`` (slots a caller can pin requests
    to, so a follow-up lands where its prefix is held). A teacher that subclasses this
    protocol gets the defaults: one request at a time, no lanes, no HTTP calls counted."""

    http_requests: int = 0  # HTTP calls made, retries included; cache hits are not calls

    model_id: str

    async def chat(self, messages: Sequence[Message], params: SamplingParams) -> list[TeacherReply]:
        """``params.n`` replies to one conversation."""
        ...

    async def aclose(self) -> None: ...

    @property
    def concurrency(self) -> int:
        """How many requests it answers at once (more in flight would only queue)."""
        return 1

    @property
    def lanes(self) -> int:
        """Slots that keep their last conversation's prefix; 0 when requests cannot be
        pinned (an API, a batch server)."""
        return 0

    def lane(self, index: int) -> Teacher:
        """This teacher with every call sent to slot ``index`` (``0 <= index < lanes``)."""
        raise ValueError(f"lane {index}: this teacher has no lanes")


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
    return max(8, 4 * student.parallel)
