"""The boxes of the loop, one module each, in the order ``run.Loop.run`` calls them:

    pool -> synth -> [attempt -> execute -> teach -> verify -> build -> train] per round
         -> gate -> evaluate -> summary

Each stage is a function of the run's context (``pipeline.context.RunContext``) that computes
only what its files lack, so a killed run resumes where it stopped. What stages share lives
one level up: the context and its store, the teacher calls (``teacher_calls``), programs in
the sandbox (``programs``), one model's evaluation (``model_eval``), the run directory's
records (``rundir``).
"""

ORDER = (
    "pool",
    "synth",
    "attempt",
    "execute",
    "teach",
    "verify",
    "build",
    "train",
    "gate",
    "evaluate",
    "summary",
)
ROUND = ("attempt", "execute", "teach", "verify", "build", "train")  # repeated per round
