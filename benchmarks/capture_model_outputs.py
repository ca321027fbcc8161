"""Re-capture the raw model outputs that tests/test_extract.py checks extraction against.

Greedy samples of real models on HumanEval and MBPP prompts, written verbatim, one file each
(a file already there is kept and only re-scored), plus ``index.json``: what produced each file
and the sandbox verdict of its extraction (failures were read by hand: the model was wrong, not
the extraction).

    python benchmarks/capture_model_outputs.py [MODEL...]    # minutes on 2 CPU cores
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from persd.llm.base import SamplingParams
from persd.llm.extract import base_stop_sequences, extract_program
from persd.llm.registry import resolve_model
from persd.prompts import student_prompt
from persd.records import Task
from persd.sandbox import Job, Sandbox
from persd.tasks import load_humaneval, load_mbpp

HERE = Path(__file__).resolve().parent.parent / "tests" / "data" / "model_outputs"
# (model, backend, chat, HumanEval indices, MBPP-test indices)
PLAN = [
    ("qwen2.5-coder-0.5b-instruct", "llama_cpp", True, [0, 2, 12, 32, 35, 53], [0, 1, 3, 10]),
    ("qwen2.5-coder-0.5b-instruct", "llama_cpp", False, [0, 4, 13, 23], [2, 7]),
    ("smollm2-135m-instruct", "llama_cpp", True, [0, 23, 35, 53], [0, 3]),
    ("smollm2-135m-instruct", "llama_cpp", False, [2, 23, 53], []),
    ("smollm2-135m-instruct", "transformers", True, [13, 23, 35], [3]),
]


def _student(model: str, backend: str):
    path = resolve_model(model).path
    if backend == "llama_cpp":
        from persd.llm.student_llama import LlamaStudent

        return LlamaStudent(path, threads=1, n_ctx=2048)
    from persd.llm.student_hf import HFStudent

    return HFStudent(path, dtype="float32", batch_size=4, threads=1)


def main() -> None:
    humaneval, mbpp = load_humaneval(), load_mbpp("test")
    index_path = HERE / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    only = set(sys.argv[1:])
    with Sandbox() as sandbox:
        for model, backend, chat, he, mb in PLAN:
            if only and model not in only:
                continue
            tasks: list[Task] = [humaneval[i] for i in he] + [mbpp[i] for i in mb]
            short = model.split("-")[0]
            names = {
                t.id: f"{short}-{backend}-{'chat' if chat else 'base'}-{t.id.replace('/', '_')}"
                for t in tasks
            }
            student = None
            for task in tasks:
                name = names[task.id]
                path = HERE / f"{name}.txt"
                if not path.exists():  # an output already captured is only re-scored
                    student = student or _student(model, backend)
                    stop = () if chat else base_stop_sequences(task.prompt, task.entry_point)
                    params = SamplingParams(max_new_tokens=320, stop=stop)
                    gen = student.generate([student_prompt(task, chat=chat)], params)[0][0]
                    path.write_text(gen.text, encoding="utf-8")
                raw = path.read_text(encoding="utf-8")
                program = extract_program(
                    raw, prompt=task.prompt, entry_point=task.entry_point, chat=chat
                )
                fb = sandbox.run(Job.for_task(task, program))
                index[name] = {
                    "model": model,
                    "backend": backend,
                    "chat": chat,
                    "task": task.id,
                    "status": fb.status,
                }
                index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
                print(f"{name}: {fb.status}", flush=True)
            if student is not None:
                student.close()


if __name__ == "__main__":
    main()
