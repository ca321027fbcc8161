"""Where greedy text can change without training (issue 33): the default student's logits on
llama.cpp, compared bit for bit, on the chat prompts of the first HumanEval tasks.

- zero LoRA: the served file alone against it plus the zero-delta GGUF LoRA that
  experiments/noise_floor.py builds (runs/noise-floor/zero-adapter/adapter.lora.gguf), each
  prompt decoded in one batch;
- batch size: the same prompt decoded in batches of 512 rows (the whole prompt), 5 and 1;
- threads: 2 against 1, in batches of 512.

Prints, per comparison and prompt, the largest |difference| of a logit, how many positions
differ at all and at how many the greedy token (argmax) differs. Run from the project root
after experiments/noise_floor.py has built the adapter (the batch-1 pass takes minutes):

    nice -n 10 python experiments/noise_floor_probe.py
"""

from __future__ import annotations

from pathlib import Path

STUDENT = "qwen2.5-coder-0.5b-instruct"
LORA = Path("runs/noise-floor/zero-adapter/adapter.lora.gguf")


def logits(tasks: list, *, n_batch: int = 512, threads: int = 2, lora: Path | None = None):
    """Each task's prompt logits (positions x vocabulary) from one llama.cpp context."""
    import numpy as np
    from llama_cpp import Llama

    from persd.llm.gguf_q8 import q8_copy
    from persd.llm.registry import default_cache_dir, resolve_model
    from persd.llm.render import from_llama
    from persd.prompts import student_prompt

    path = resolve_model(STUDENT).path
    served = q8_copy(path, default_cache_dir() / "serving")  # what LlamaStudent serves
    llm = Llama(
        model_path=str(served),
        n_ctx=1024,
        n_batch=n_batch,
        n_ubatch=n_batch,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=True,
        verbose=False,
        **({"lora_path": str(lora)} if lora else {}),
    )
    renderer = from_llama(llm, str(path))
    out = []
    for task in tasks:
        ids = list(renderer.ids(student_prompt(task, chat=True)))
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[: len(ids)], copy=True))
    llm.close()
    return out


def compare(label: str, first: list, second: list) -> None:
    import numpy as np

    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        d = np.abs(a - b)
        print(
            f"{label}, prompt {i}: max |diff| {d.max():.3g}, positions differing "
            f"{int((d.max(axis=1) > 0).sum())}/{a.shape[0]}, "
            f"argmax differs {int((a.argmax(1) != b.argmax(1)).sum())}"
        )


def main() -> None:
    from persd.tasks import load_benchmark

    tasks = list(load_benchmark("humaneval")[:3])
    base = logits(tasks)
    compare("zero LoRA", base, logits(tasks, lora=LORA))
    compare("threads 2 vs 1", base, logits(tasks, threads=1))
    for n_batch in (5, 1):
        compare(f"n_batch 512 vs {n_batch}", base, logits(tasks, n_batch=n_batch))


if __name__ == "__main__":
    main()
