"""persd: personalised distillation for code language models."""

from persd.errors import DataError, PersdError
from persd.records import Feedback, Outcome, Task, Test

__all__ = ["DataError", "Feedback", "Outcome", "PersdError", "Task", "Test"]
__version__ = "0.1.0"
