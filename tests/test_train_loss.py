"""Training speed without changing what is learnt (issue 35): the LM head only where a label is
(``persd.train.loss``), and packed micro-batches (``train.packed``: rows side by side in one
sequence, no padding). On the tiny random Qwen2 of test_train.py, nothing mocked."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from persd.train.loss import label_only_loss  # noqa: E402
from persd.train.sft import make_trainer  # noqa: E402
from test_train import _config, _examples, tiny_model  # noqa: E402,F401  (the session fixture)


def _model(path: Path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _rows(n: int = 3) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of ``n`` rows of different lengths, the first half of each a
    prompt (label -100)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for length in (9, 14, 6)[:n]:
        ids = torch.randint(10, 300, (length,), generator=g).tolist()
        labels = [-100] * (length // 2) + ids[length // 2 :]
        out.append((ids, labels))
    return out


def test_the_label_only_loss_is_the_models_own_loss_and_gradient(tiny_model: Path):  # noqa: F811
    """Same value and same gradients as the full-vocabulary loss transformers computes on
    every position, on a padded batch."""
    model = _model(tiny_model)
    rows = _rows()
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r[0] + [0] * (width - len(r[0])) for r in rows])
    labels = torch.tensor([r[1] + [-100] * (width - len(r[1])) for r in rows])
    mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows])

    reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    reference.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = label_only_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    got.backward()
    assert got.item() == pytest.approx(reference.item(), rel=1e-5)
    for p, w in zip(model.parameters(), want, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-6)


def test_a_packed_row_sees_only_itself_and_the_loss_is_the_rows_one_by_one(tiny_model: Path):  # noqa: F811
    """Rows side by side with positions restarting at each: every row's logits are its
    logits alone (attention never crosses a row), and the packed loss is the token-weighted
    loss of the rows one by one."""
    model = _model(tiny_model)
    rows = _rows()
    packed_ids = torch.tensor([sum((r[0] for r in rows), [])])
    positions = torch.tensor([sum((list(range(len(r[0]))) for r in rows), [])])
    with torch.no_grad():
        # Without a KV cache, as in training: transformers finds the rows from the restarting
        # positions only then (with one, every row would attend to the rows before it).
        packed = model(input_ids=packed_ids, position_ids=positions, use_cache=False).logits[0]
        at = 0
        for ids, _ in rows:
            alone = model(input_ids=torch.tensor([ids])).logits[0]
            torch.testing.assert_close(packed[at : at + len(ids)], alone, rtol=1e-4, atol=1e-5)
            at += len(ids)
    # The packed loss: each row's first label is not predicted from the row before it.
    labels = sum(([-100] + r[1][1:] for r in rows), [])
    inputs = {"input_ids": packed_ids, "position_ids": positions, "labels": torch.tensor([labels])}
    with torch.no_grad():
        loss = label_only_loss(model, inputs)
        total = count = 0.0
        for ids, row_labels in rows:
            n = sum(x != -100 for x in row_labels[1:])
            alone = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([row_labels])}
            total += label_only_loss(model, alone).item() * n
            count += n
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_a_packed_step_is_the_accumulated_step(tiny_model: Path, tmp_path: Path):  # noqa: F811
    """``train.packed`` with 4 rows per micro-batch against 4 micro-batches of one row: the
    collator hands the model one sequence with restarting positions and no attention mask,
    and the first optimizer step's loss is the same number (the same rows, the same order)."""
    rows = _examples("chat")
    losses = {}
    for name, kw in {
        "accumulated": {"batch_size": 1, "grad_accum": 4},
        "packed": {"batch_size": 4, "grad_accum": 1, "packed": True},
    }.items():
        cfg = _config(max_steps=1, logging_steps=1, **kw)
        trainer, _ = make_trainer(cfg, rows, str(tiny_model), tmp_path / name)
        batch = next(iter(trainer.get_train_dataloader()))
        if name == "packed":
            assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch
            assert batch.get("attention_mask") is None
            assert (batch["position_ids"][0] == 0).sum() == 4  # four rows start in it
        trainer.args.save_strategy = "no"
        trainer.train()
        losses[name] = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    assert losses["packed"] == pytest.approx(losses["accumulated"], rel=1e-4)
