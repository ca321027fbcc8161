"""Teacher settings: which endpoint, how hard to push it, what it may cost, and the local server.

Mounted into ``RunConfig`` as ``teacher:``. The API key itself is never a setting: only the
NAME of the environment variable that holds it, so a config file can be shared and logged.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ServerConfig(BaseModel):
    """A local llama.cpp server (llama-cpp-python) that persd starts, health-checks and stops."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("smollm2-135m-instruct", description="registry name or path of a GGUF file")
    # llama-cpp-python's server answers one request at a time (one model, one lock), so
    # parallel slots are separate processes; the client sends each request to the least
    # busy one. One thread per slot by default: on a small shared CPU, 2 threads per
    # process collapse when anything else runs, 1 thread holds its speed.
    slots: int = Field(1, ge=1, description="server processes, each answering one request at once")
    threads_per_slot: int = Field(1, ge=1, description="CPU threads of each server process")
    parallel: int = Field(
        1,
        ge=1,
        description="requests each slot decodes together in one llama.cpp batch (persd's batch "
        "server); 1: llama-cpp-python's server, one request at a time",
    )
    lookup: int = Field(
        0,
        ge=0,
        le=32,
        description="draft tokens guessed per step from each request's own context "
        "(prompt-lookup decoding, persd's batch server; 0: off); a refinement restates most of "
        "the code it fixes, and every kept token is the one the model samples",
    )
    n_ctx: int = Field(
        4096, ge=256, description="context window (tokens) of each slot (of each sequence)"
    )
    legacy_sampling: bool = Field(
        False,
        description="leave llama-cpp-python's server sampling defaults in place (repeat penalty "
        "1.1, top-k 40, min-p 0.05), as persd did before it sent them; only to reuse the teacher "
        "cache of a run recorded then. False: the server samples exactly the request's "
        "temperature and top_p",
    )
    chat_format: str | None = Field(
        None, description="llama-cpp-python chat format; None: the template inside the GGUF"
    )
    startup_timeout_s: float = Field(120.0, gt=0, description="wait this long for /v1/models")

    @property
    def batched(self) -> bool:
        """Whether the slots are persd's batch server (``parallel`` > 1 or ``lookup``)."""
        return self.parallel > 1 or self.lookup > 0

    @model_validator(mode="after")
    def _batch_server_samples_plainly(self) -> ServerConfig:
        if self.batched and self.legacy_sampling:
            raise ValueError(
                "legacy_sampling is llama-cpp-python's server (parallel: 1, lookup: 0); persd's "
                "batch server samples only temperature and top_p"
            )
        if self.batched and self.chat_format:
            raise ValueError(
                "chat_format is llama-cpp-python's setting (parallel: 1, lookup: 0); persd's "
                "batch server renders prompts from the GGUF's own template"
            )
        return self


class TeacherConfig(BaseModel):
    """How persd reaches the teacher. Defaults: OpenAI's API; set ``server`` to run one locally."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("gpt-4o-mini", description="model name sent with every request")
    base_url: str = Field(
        "https://api.openai.com/v1", description="OpenAI-compatible root; ignored with `server`"
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="NAME of the environment variable holding the API key"
    )
    server: ServerConfig | None = Field(
        None, description="start a local llama.cpp server instead of calling base_url"
    )
    cache_file: str = Field(
        "teacher.sqlite", description="response cache + cost ledger, inside the run directory"
    )
    concurrency: int | None = Field(
        None, ge=1, description="requests in flight; None: 8 for an API, one per local slot"
    )
    max_attempts: int = Field(5, ge=1, description="tries per request on 429/5xx/network errors")
    backoff_s: float = Field(1.0, ge=0, description="first retry delay; doubles, with jitter")
    backoff_max_s: float = Field(30.0, ge=0, description="longest single retry delay")
    timeout_s: float = Field(120.0, gt=0, description="per HTTP request, connect to last byte")
    budget_usd: float | None = Field(
        None, ge=0, description="hard cap on the ledger's total for this run directory"
    )
    max_calls: int | None = Field(
        None, ge=0, description="hard cap on paid HTTP calls recorded in the ledger"
    )
    price_per_mtok_in: float | None = Field(
        None, ge=0, description="USD per 1M input tokens; overrides prices.yaml"
    )
    price_per_mtok_out: float | None = Field(
        None, ge=0, description="USD per 1M output tokens; overrides prices.yaml"
    )

    @model_validator(mode="after")
    def _prices_come_in_pairs(self) -> TeacherConfig:
        if (self.price_per_mtok_in is None) != (self.price_per_mtok_out is None):
            raise ValueError("set both price_per_mtok_in and price_per_mtok_out, or neither")
        return self
