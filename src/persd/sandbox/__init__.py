"""Run untrusted programs against tests: safe, fast, and with verdicts the program can't forge.

``Sandbox`` keeps warm workers that fork one confined process per sample; tests run in the
trusted parent and only plain data crosses. A verdict becomes prompt text in
``persd.prompts.render_feedback``, the one rendering every later stage uses.
"""

from persd.sandbox.config import SandboxConfig
from persd.sandbox.job import Job
from persd.sandbox.workers import Sandbox

__all__ = ["Job", "Sandbox", "SandboxConfig"]
