"""Model access behind two small protocols: ``Student`` (local weights) and ``Teacher`` (chat API).

Heavy libraries (torch, transformers, llama_cpp, vllm) are imported inside the backends that
need them, never here: ``import persd.llm`` stays cheap.
"""

from persd.llm.base import (
    Generation,
    Message,
    Prompt,
    SamplingParams,
    Student,
    Teacher,
    TeacherReply,
)

__all__ = [
    "Generation",
    "Message",
    "Prompt",
    "SamplingParams",
    "Student",
    "Teacher",
    "TeacherReply",
]
