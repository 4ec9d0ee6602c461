"""Fine-tuning the tiny Qwen2.5-VL: down-sampling, the answer-only labels, the loss the Trainer
optimises (CE, or CE + w x weighted MSE of the expected-digit probability, checked against an
independent computation on the same batch), and end-to-end NF4 + LoRA training under the baseline
and enhanced presets: the loss falls, the scores separate positives from negatives, the adapter and
model card are written and the reloaded adapter scores the same."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from crashcast.config import load_config
from crashcast.prompts.builder import Prompt
from crashcast.risk.finetune import downsample, prompts_hash

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _prompt(pid: str, label: int, target: float, images: tuple[Path, ...] = (), text: str = "") -> Prompt:
    return Prompt(id=pid, images=images, text=text or f"window {pid}", assistant=f"Collision Probability: {target:.3f}",
                  template="test", clip_id=pid, phase="mid", horizon_s=0.0, label=label, soft_target=target)


def _png(path: Path, rgb: tuple[int, int, int], k: int) -> Path:
    from PIL import Image

    a = np.zeros((56, 56, 3), np.uint8)
    a[:] = rgb
    a[8 + 12 * k: 20 + 12 * k, 10:40] = 255  # a bright box that moves over the keyframes
    Image.fromarray(a).save(path)
    return path


@pytest.fixture(scope="module")
def toy_windows(tmp_path_factory) -> dict[str, list[Prompt]]:
    """A toy risk problem: positives (target 0.9) show a red scene and a close, closing object;
    negatives (target 0.1) a blue scene and a far object moving away. Three 56x56 keyframes each."""
    folder = tmp_path_factory.mktemp("toy-windows")
    red = tuple(_png(folder / f"red{k}.png", (200, 40, 40), k) for k in range(3))
    blue = tuple(_png(folder / f"blue{k}.png", (40, 40, 200), k) for k in range(3))

    def window(i: int, positive: bool) -> Prompt:
        if positive:
            return _prompt(f"p{i}", 1, 0.9, red, f"Object A: car, {2 + 0.5 * i:.1f} m ahead, closing at 8 m/s.")
        return _prompt(f"n{i}", 0, 0.1, blue, f"Object A: car, {30 + i:.1f} m ahead, moving away.")

    return {
        "train": [window(i, i % 3 == 0) for i in range(9)],  # 3 positives, 6 negatives
        "val": [window(20, True), window(21, False)],
    }


def _cfg(preset: str, *overrides: str):
    return load_config(preset, ["vlm.base_model=random:tiny", *overrides]).vlm


# --------------------------------------------------------------------------------------------------
# down-sampling
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_pos", "n_neg", "fraction", "kept_neg"), [
    (3, 9, 1 / 3, 3),
    (2, 10, 1 / 3, 3),   # 3.33 -> 3
    (2, 5, 0.5, 3),      # 2.5 -> 3 (halves round up)
    (0, 7, 1 / 3, 2),
    (4, 0, 1 / 3, 0),
    (1, 6, 1.0, 6),
    (1, 2, 0.1, 0),
])
def test_downsample_keeps_every_positive_and_a_fraction_of_negatives(n_pos, n_neg, fraction, kept_neg):
    prompts = [_prompt(f"p{i}", 1, 0.8) for i in range(n_pos)] + [_prompt(f"n{i}", 0, 0.0) for i in range(n_neg)]
    rng = np.random.default_rng(n_pos * 100 + n_neg)
    prompts = [prompts[i] for i in rng.permutation(len(prompts))]  # positives and negatives interleaved
    out = downsample(prompts, fraction, seed=5)
    assert [p for p in out if p.label == 1] == [p for p in prompts if p.label == 1]
    assert sum(p.label == 0 for p in out) == kept_neg
    positions = [prompts.index(p) for p in out]
    assert positions == sorted(positions)  # the input order is kept
    assert out == downsample(prompts, fraction, seed=5)  # seeded


def test_downsample_draws_different_negatives_per_seed_and_rejects_bad_fractions():
    prompts = [_prompt("p", 1, 0.9)] + [_prompt(f"n{i}", 0, 0.0) for i in range(30)]
    draws = {tuple(p.id for p in downsample(prompts, 1 / 3, seed)) for seed in range(5)}
    assert len(draws) > 1
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="negative_fraction"):
            downsample(prompts, bad, 0)


def test_prompts_hash_follows_content_not_paths(tmp_path):
    a = _png(tmp_path / "a.png", (1, 2, 3), 0)
    b = tmp_path / "moved" / "a.png"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    p = _prompt("w", 1, 0.9, (a,))
    moved = _prompt("w", 1, 0.9, (b,))
    assert prompts_hash([p]) == prompts_hash([moved])
    assert prompts_hash([p]) != prompts_hash([_prompt("w", 1, 0.8, (a,))])


# --------------------------------------------------------------------------------------------------
# labels and loss
# --------------------------------------------------------------------------------------------------


def test_collator_labels_only_the_answer(tiny_cache, offline_caches, toy_windows):
    from crashcast.risk.finetune import IGNORE_INDEX, VlmCollator
    from crashcast.risk.vlm import load_processor, resolve_base_model

    cfg = _cfg("paper-baseline")
    processor = load_processor(cfg, resolve_base_model(cfg.base_model))
    reason = "Collision Probability: 0.900\nReason: car A, 2.0 m ahead, closing at 8.0 m/s, TTC 0.3 s."
    prompts = [*toy_windows["train"][:3], _prompt("text-only", 0, 0.25, text="nothing tracked"),
               replace(toy_windows["train"][0], id="rationale", assistant=reason)]
    batch = VlmCollator(processor)(prompts)
    assert batch["labels"].shape == batch["input_ids"].shape
    assert batch["target"].tolist() == pytest.approx([p.soft_target for p in prompts])
    assert batch["label"].tolist() == [p.label for p in prompts]
    assert batch["image_grid_thw"].shape[0] == 12  # three keyframes for each prompt with images
    for row, labels, mask, p in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], prompts, strict=True):
        kept = labels != IGNORE_INDEX
        assert (row[kept] == labels[kept]).all()
        assert not (kept & (mask == 0)).any()  # no padding in the loss
        assert processor.tokenizer.decode(labels[kept]) == p.assistant + "<|im_end|>"


@pytest.mark.parametrize("preset", ["paper-baseline", "paper-enhanced"])
def test_trainer_loss_is_ce_plus_weighted_mse(preset, tiny_cache, offline_caches, toy_windows, tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    import torch
    import torch.nn.functional as F

    from crashcast.risk.finetune import VlmCollator, make_trainer, prepare_model
    from crashcast.risk.vlm_output import DigitTokens, expected_probability

    cfg = _cfg(preset)
    model, processor, device = prepare_model(cfg, "cpu")
    with torch.no_grad():  # move the LoRA weights off their zero start so the adapters take part
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))
    train = toy_windows["train"]
    trainer = make_trainer(model, processor, train, [], cfg, tmp_path, device)
    batch = VlmCollator(processor)([train[0], train[1], train[3]])  # positive, negative, positive
    model.eval()  # no dropout: both computations see the same forward

    loss = trainer.compute_loss(model, batch)
    assert loss.requires_grad
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    loss = float(loss.detach())

    inputs = {k: v for k, v in batch.items() if k not in ("target", "label")}
    with torch.no_grad():
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits.float()
    labels = inputs["labels"]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    reading = expected_probability(logits, labels, DigitTokens.from_tokenizer(processor.tokenizer))
    assert reading.found.all()
    target = batch["target"].tolist()
    weights = [cfg.positive_weight if lab == 1 else 1.0 for lab in batch["label"].tolist()]
    mse = sum(w * (p - t) ** 2 for w, p, t in zip(weights, reading.probability.tolist(), target, strict=True)) / 3
    expected = float(ce) + cfg.mse_weight * mse
    assert loss == pytest.approx(expected, rel=1e-4, abs=1e-5)
    if preset == "paper-enhanced":
        assert cfg.mse_weight == 5.0 and cfg.positive_weight == 3.0
        assert cfg.mse_weight * mse > 1e-3  # the MSE term is really there
    else:
        assert loss == pytest.approx(float(ce), rel=1e-4)


@pytest.mark.parametrize(("preset", "restarts"), [("paper-enhanced", 2), ("paper-baseline", 0)])
def test_enhanced_learning_rate_restarts_once_per_epoch(preset, restarts, tiny_cache, offline_caches, toy_windows, tmp_path):
    """The learning rate the Trainer's scheduler gives, step by step over a run: the enhanced preset
    warms up over the first 10 % of the steps, then decays by cosine and jumps back to the full rate
    at the start of each later cycle (3 cycles for 3 epochs: 2 restarts); the baseline's linear decay
    never rises again."""
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    from crashcast.risk.finetune import make_trainer, prepare_model

    cfg = _cfg(preset)
    model, processor, device = prepare_model(cfg, "cpu")
    trainer = make_trainer(model, processor, toy_windows["train"], [], cfg, tmp_path, device)
    steps = 90
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    warm = round(cfg.warmup_ratio * steps)
    rises = [i for i in range(warm + 1, steps) if lrs[i] > lrs[i - 1] + 1e-12]
    assert len(rises) == restarts, (rises, lrs)
    for i in rises:  # a restart goes back to the full rate, from near zero
        assert lrs[i] == pytest.approx(cfg.learning_rate) and lrs[i - 1] < 0.05 * cfg.learning_rate
    if restarts:
        cycle = (steps - warm) / (restarts + 1)
        assert [i - warm for i in rises] == [pytest.approx(cycle * k, abs=1) for k in range(1, restarts + 1)]


# --------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["paper-baseline", "paper-enhanced"])
def test_qlora_training_fits_the_toy_problem_and_reloads(preset, tiny_cache, offline_caches, toy_windows, tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    from safetensors import safe_open

    from crashcast.risk.finetune import CHECKPOINTS, train_vlm
    from crashcast.risk.vlm import MODEL_CARD_JSON, load_trained, load_vlm

    # the paper's preset, with a learning rate and epochs for a toy problem and no accumulation
    cfg = _cfg(preset, "vlm.learning_rate=2e-2", "vlm.epochs=10", "vlm.gradient_accumulation=1",
               "vlm.max_new_tokens=10")
    train, val = toy_windows["train"], toy_windows["val"]
    out = tmp_path / "model"
    result = train_vlm(train, val, cfg, out, device="cpu")

    kept = downsample(train, cfg.negative_fraction, cfg.seed)
    n_neg = sum(p.label == 0 for p in train)
    assert result.n_train == len(kept) == 3 + round(cfg.negative_fraction * n_neg)
    assert len(result.losses) == len(kept) * 10 and len(result.eval_losses) == 10
    # the loss falls (medians: single-sample steps at a high learning rate are noisy)
    assert np.median(result.losses[-10:]) < 0.5 * np.median(result.losses[:10])
    assert result.best_eval_loss == min(result.eval_losses) < 0.5 * result.eval_losses[0]

    # the adapter and its model card
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", MODEL_CARD_JSON} <= {
        p.name for p in out.iterdir()}
    assert not (out / CHECKPOINTS).exists()
    card = json.loads((out / MODEL_CARD_JSON).read_text())
    assert card["kind"] == f"vlm-{cfg.mode}" and card["adapter"] is True and not (out / "crashcast_model.json").exists()
    assert card["params"]["mode"] == cfg.mode and card["params"]["mse_weight"] == cfg.mse_weight
    assert card["training"]["data"]["train_hash"] == prompts_hash(kept) == result.data_hash
    assert card["training"]["metrics"]["best_eval_loss"] == pytest.approx(result.best_eval_loss)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("visual" in k for k in keys)  # the language model's layers only
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in keys} == set(cfg.lora.target_modules)

    # the kept model separates the classes on the training windows (a fit, not generalisation: the
    # enhanced run never saw the negatives it dropped, which are scored too), and the adapter
    # reloads and scores the same
    reloaded = load_vlm(cfg, adapter=out, device="cpu")
    scores = reloaded.score([*train, *val], batch_size=4)
    pos = [s.probability for s, p in zip(scores, train, strict=False) if p.label == 1]
    neg = [s.probability for s, p in zip(scores, train, strict=False) if p.label == 0]
    assert np.mean(pos) > np.mean(neg) + 0.5, (pos, neg)
    assert [s.probability for s in scores[-len(val):]] == pytest.approx(result.val_scores, abs=1e-4)
    again = load_trained(out, device="cpu").score(val, batch_size=2)
    assert [s.probability for s in again] == pytest.approx(result.val_scores, abs=1e-4)
