"""LoRA fine-tuning of Qwen2.5-VL (or Qwen3-VL) on risk prompts (the paper, §5): 4-bit NF4 QLoRA
(`vlm.quantization: nf4`, the paper's) or plain LoRA over the unquantized base model in
`compute_dtype` (`vlm.quantization: none`: bf16 LoRA with `compute_dtype: bfloat16` on a GPU;
float32 on a CPU).

`train_vlm(train, val, cfg.vlm, out_dir)` runs the Hugging Face Trainer (so accelerate/torchrun
multi-GPU works unchanged) over `Prompt`s:
- the collator puts each prompt through the model's chat template with its answer and labels only
  the assistant's answer (and the `<|im_end|>` that ends it); everything else is -100;
- baseline (`mse_weight` 0): the causal-LM cross-entropy over the answer's tokens, from logits
  computed at the answer's positions only (`logits_to_keep`): at the paper's ~4.2k-token prompts the
  full B x L x 151,936 logits (and their gradient) would be several GB for about ten labelled tokens;
- enhanced: CE + `mse_weight` x `weighted_mse(expected-digit probability, soft target,
  positive_weight, label)`, the probability read from the logits at the answer's digits under
  teacher forcing (crashcast.risk.vlm_output), on the negatives down-sampled to `negative_fraction`;
- validation loss (the same loss) every epoch, the best epoch's adapter kept;
- the adapter saved as safetensors in `out_dir` with a model card: README.md and
  `model.json` (its settings, hashes of the training and validation prompts, metrics).

Decisions:
- HF Trainer, not TRL's SFTTrainer: the loss needs the soft target and label of every sample next
  to the batch, which a plain collator + `compute_loss` give directly.
- Cross-entropy is the mean over the answer tokens of each micro-batch and the total loss is
  averaged over the accumulation steps (`loss_is_scaled_for_ga = False`): the paper's batch of one
  sample x 16 then weighs every sample equally, as the MSE term does.
- LoRA modules are matched inside the language model only (`cfg.lora.target_modules` names there),
  so names shared with the vision tower never pick up its layers: `language_model_name` finds the
  language model per architecture (`LANGUAGE_MODELS`, keyed by the config's model_type; other
  architectures through transformers' `get_decoder()`), and `lora_targets` makes the peft regex
  for the modules under it. A name that matches nothing there is an error, not a silent no-op.
- `cosine_with_restarts` is transformers' hard-restart cosine with `cfg.num_cycles` cycles after the
  warmup (the enhanced preset: one per epoch, the paper's "periodically reset"; transformers'
  default of 1 never restarts); `constant` with a warmup is `constant_with_warmup`.
- On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weight at its first no-grad forward
  (the per-epoch evaluation) and training after it fails; `load_base_model` turns that off on CPU.

Heavy imports happen inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from crashcast.errors import ConfigError
from crashcast.prompts.builder import Prompt
from crashcast.risk.vlm import MODEL_CARD_JSON, RiskVlm, chat_texts, encode, load_base_model, vlm_requires
from crashcast.risk.vlm_output import DigitTokens, expected_probability, weighted_mse
from crashcast.runtime import packages
from crashcast.settings import VlmConfig

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
CHECKPOINTS = "checkpoints"


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def downsample(prompts: Sequence[Prompt], fraction: float, seed: int) -> list[Prompt]:
    """Every positive (label 1) and round(fraction x negatives) negatives drawn without replacement
    (seeded; halves round up), in the input order. fraction 1 keeps everything."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"negative_fraction must lie in (0, 1], got {fraction}")
    negatives = [i for i, p in enumerate(prompts) if p.label != 1]
    n_keep = min(len(negatives), math.floor(fraction * len(negatives) + 0.5))
    kept = set(random.Random(seed).sample(negatives, n_keep))
    return [p for i, p in enumerate(prompts) if p.label == 1 or i in kept]


def prompts_hash(prompts: Sequence[Prompt]) -> str:
    """sha256 of what training sees of each prompt, in order: id, text, answer, label, soft target and
    the bytes of every image (not its path, so a moved run folder hashes the same)."""
    h = hashlib.sha256()
    for p in prompts:
        images = [hashlib.sha256(Path(i).read_bytes()).hexdigest() for i in p.images]
        record = {"id": p.id, "text": p.text, "assistant": p.assistant, "label": p.label,
                  "soft_target": p.soft_target, "images": images}
        h.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def answer_labels(input_ids: Any, attention_mask: Any, header_ids: Sequence[int], end_id: int) -> Any:
    """Labels for a batch (B, L): the tokens after the last assistant header up to and including the
    first `end_id` (<|im_end|>) after it; -100 elsewhere (prompt, images, padding). A row without a
    header is all -100 (it adds nothing to the loss)."""
    import torch

    labels = torch.full_like(input_ids, IGNORE_INDEX)
    n, length = len(header_ids), input_ids.shape[1]
    if length < n:
        return labels
    header = torch.as_tensor(list(header_ids), device=input_ids.device)
    at_header = (input_ids.unfold(1, n, 1) == header).all(-1) & attention_mask[:, :length - n + 1].bool()
    for r in range(input_ids.shape[0]):
        starts = at_header[r].nonzero()
        if not len(starts):
            continue
        begin = int(starts[-1]) + n
        ends = (input_ids[r, begin:] == end_id).nonzero()
        stop = begin + int(ends[0]) + 1 if len(ends) else length
        keep = attention_mask[r, begin:stop].bool()
        labels[r, begin:stop] = torch.where(keep, input_ids[r, begin:stop], IGNORE_INDEX)
    return labels


@dataclass
class VlmCollator:
    """Prompts -> a training batch: the processor's tensors for each prompt with its answer (padded
    on the right), `labels` on the answer only, and per sample `target` (soft target) and `label`."""

    processor: Any

    def __post_init__(self) -> None:
        tok = self.processor.tokenizer
        if "<|im_end|>" not in tok.get_vocab():
            raise ConfigError(f"vlm.base_model: its tokenizer ({type(tok).__name__}) has no <|im_end|>: crashcast "
                              "trains on ChatML chat templates (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) only")
        self.header_ids = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")

    def __call__(self, prompts: list[Prompt]) -> dict[str, Any]:
        import torch

        tok = self.processor.tokenizer
        side, tok.padding_side = tok.padding_side, "right"
        try:
            batch = encode(self.processor, prompts, chat_texts(self.processor, prompts, answers=True))
        finally:
            tok.padding_side = side
        batch["labels"] = answer_labels(batch["input_ids"], batch["attention_mask"], self.header_ids, self.end_id)
        batch["target"] = torch.tensor([float(p.soft_target) for p in prompts], dtype=torch.float32)
        batch["label"] = torch.tensor([int(p.label) for p in prompts], dtype=torch.long)
        return batch


class _PromptDataset:
    """A list of prompts as a map-style dataset (the collator does the work)."""

    def __init__(self, prompts: Sequence[Prompt]) -> None:
        self.prompts = list(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> Prompt:
        return self.prompts[i]


# --------------------------------------------------------------------------------------------------
# Loss and trainer
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossParts:
    """One batch's loss and its parts (tensors): `loss` = `ce` + mse_weight x `mse`."""

    loss: Any
    ce: Any
    mse: Any
    probability: Any


def answer_positions(labels: Any) -> Any:
    """The positions whose logits score a labelled token (one before each; the answer's), in order:
    what the model is asked to compute logits for (`logits_to_keep`), instead of all L x vocabulary."""
    import torch

    scored = (labels[:, 1:] != IGNORE_INDEX).any(dim=0)
    return torch.nonzero(scored).squeeze(1)


def kept_labels(labels: Any, positions: Any) -> Any:
    """Labels aligned with logits kept at `positions` for a shift of one: column j + 1 holds the token
    the logit at positions[j] scores (column 0 is ignored)."""
    import torch

    first = torch.full_like(labels[:, :1], IGNORE_INDEX)
    return torch.cat([first, labels[:, positions + 1]], dim=1)


def vlm_loss(outputs: Any, labels: Any, target: Any, label: Any, digits: DigitTokens, mse_weight: float,
             positive_weight: float) -> LossParts:
    """The fine-tuning loss of one batch from the model's logits and the labels they score (shift one:
    the logit at column j scores the label at column j + 1; `kept_labels` when only the answer's
    logits were computed): CE over the labelled tokens, plus mse_weight x weighted MSE of the
    expected-digit probability."""
    import torch.nn.functional as F

    logits = outputs.logits
    n = labels.shape[1] - 1  # logits scoring labels 1..n: all but the last (full) or all kept ones
    ce = F.cross_entropy(logits[:, :n].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                         ignore_index=IGNORE_INDEX)
    reading = expected_probability(logits, labels, digits, shift=1)
    if mse_weight > 0:
        mse = weighted_mse(reading.probability, target, positive_weight, label=label, valid=reading.found)
        loss = ce + mse_weight * mse.to(ce.dtype)
    else:
        mse = weighted_mse(reading.probability.detach(), target, positive_weight, label=label, valid=reading.found)
        loss = ce
    return LossParts(loss, ce, mse, reading.probability)


@lru_cache(maxsize=1)
def _trainer_class() -> type:
    """The Trainer subclass, made on first use so `import crashcast` stays free of transformers."""
    from transformers import Trainer

    class VlmTrainer(Trainer):
        """Trainer whose loss is `vlm_loss`; logs the CE and MSE parts next to the loss."""

        loss_is_scaled_for_ga = False

        def __init__(self, *args: Any, digits: DigitTokens, mse_weight: float, positive_weight: float,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.digits = digits
            self.mse_weight = mse_weight
            self.positive_weight = positive_weight
            self.model_accepts_loss_kwargs = False  # CE is a per-batch mean; see the module docstring
            self._parts: dict[str, list[float]] = {"ce": [], "mse": []}

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs = dict(inputs)
            target = inputs.pop("target")
            label = inputs.pop("label")
            labels = inputs.pop("labels")
            positions = answer_positions(labels)  # logits for the answer only: not B x L x vocabulary
            outputs = model(**inputs, logits_to_keep=positions)
            parts = vlm_loss(outputs, kept_labels(labels, positions), target, label, self.digits, self.mse_weight,
                             self.positive_weight)
            if model.training:
                self._parts["ce"].append(float(parts.ce.detach()))
                self._parts["mse"].append(float(parts.mse.detach()))
            return (parts.loss, outputs) if return_outputs else parts.loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self._parts["ce"]:
                for k, v in self._parts.items():
                    logs[k] = sum(v) / len(v)
                    v.clear()
            super().log(logs, start_time)

    return VlmTrainer


def _scheduler(cfg: VlmConfig) -> str:
    if cfg.scheduler == "constant" and cfg.warmup_ratio > 0:
        return "constant_with_warmup"
    return cfg.scheduler


#: config.model_type -> the qualified module name of the language model inside the model that
#: `AutoModelForImageTextToText` loads (the vision tower, its merger and the LM head lie outside it)
LANGUAGE_MODELS = {
    "qwen2_vl": "model.language_model",
    "qwen2_5_vl": "model.language_model",
    "qwen3_vl": "model.language_model",
    "qwen3_vl_moe": "model.language_model",
}


def language_model_name(model: Any) -> str:
    """The qualified name of `model`'s language model: `LANGUAGE_MODELS` for the architectures named
    there, else where transformers' `get_decoder()` finds it. ConfigError when neither finds a
    module that is not the whole model (LoRA would then reach the vision tower too)."""
    modules = dict(model.named_modules())
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    name = LANGUAGE_MODELS.get(model_type or "")
    if name is not None and name in modules:
        return name
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    for name, module in modules.items():
        if name and module is decoder:
            return name
    raise ConfigError(f"vlm.base_model: cannot tell the language model of a {model_type!r} model from its "
                      "vision tower, so the LoRA targets cannot be limited to it")


def lora_targets(model: Any, names: Sequence[str]) -> str:
    """A peft regex (full match) for the modules called `names` (the last part of their name:
    q_proj, v_proj, ...) inside `model`'s language model only. ConfigError naming the names that
    match no module there, with the linear layers' names there are."""
    import re

    prefix = language_model_name(model)
    inside = [n for n, _ in model.named_modules() if n.startswith(prefix + ".")]
    leaves = {n.rsplit(".", 1)[-1] for n in inside}
    missing = sorted(set(names) - leaves)
    if missing:
        import torch

        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if n.startswith(prefix + ".") and isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"vlm.lora.target_modules: {', '.join(missing)}: no such module in the language model "
                          f"({prefix}) of {getattr(model.config, 'model_type', '?')}; its linear layers are "
                          f"{', '.join(linear)}")
    alternatives = "|".join(re.escape(n) for n in sorted(set(names)))
    return rf"{re.escape(prefix)}\.(?:.+\.)?(?:{alternatives})"


def _training_device(device: str) -> str:
    """'auto' -> this process's CUDA device under torchrun/accelerate (LOCAL_RANK), else cuda:0 or cpu."""
    from crashcast.runtime.context import resolve_device

    device = resolve_device(device)
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def prepare_model(cfg: VlmConfig, device: str = "auto", weights_dir: Path | None = None) -> tuple[Any, Any, str]:
    """(peft model ready to train, processor, device): the base model with fresh LoRA adapters per
    `cfg.lora` (seeded by `cfg.seed`) on its language model's `cfg.lora.target_modules`. With
    `vlm.quantization: nf4` (and bitsandbytes) QLoRA: the base in 4-bit NF4, prepared for k-bit
    training; with `none` plain LoRA: the base unquantized in `compute_dtype` on CUDA (float32 on a
    CPU), frozen; the adapters are float32 either way (peft's default for a half-precision base)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    device = _training_device(device)
    model, processor = load_base_model(cfg, device, weights_dir)
    checkpointing = device.startswith("cuda")
    quantized = bool(getattr(model, "is_loaded_in_4bit", False))
    if quantized:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    set_seed(cfg.seed)
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=lora_targets(model, cfg.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    base_dtype = str(next(p.dtype for n, p in model.named_parameters() if "lora_" not in n)).removeprefix("torch.")
    log.info("%s on %s: %d trainable parameters of %d (%.3f %%); base %s", "QLoRA" if quantized else "LoRA",
             ", ".join(cfg.lora.target_modules), trainable, total, 100.0 * trainable / max(total, 1),
             "4-bit NF4" if quantized else f"unquantized, {base_dtype}")
    if trainable == 0:
        raise ConfigError(f"vlm.lora.target_modules {cfg.lora.target_modules}: no module of the language model matches")
    processor.tokenizer.padding_side = "right"
    return model, processor, device


def make_trainer(model: Any, processor: Any, train: Sequence[Prompt], val: Sequence[Prompt], cfg: VlmConfig,
                 out_dir: Path, device: str) -> Any:
    """The configured Trainer (not yet run): batches, accumulation, lr, scheduler, warmup and epochs
    from `cfg`; evaluation and a checkpoint every epoch, the best (lowest validation loss) restored at
    the end; checkpoints in `out_dir/checkpoints`."""
    from transformers import TrainingArguments

    on_cuda = device.startswith("cuda")
    has_val = len(val) > 0
    args = TrainingArguments(
        output_dir=str(Path(out_dir) / CHECKPOINTS),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        lr_scheduler_type=_scheduler(cfg),
        lr_scheduler_kwargs={"num_cycles": cfg.num_cycles} if cfg.scheduler == "cosine_with_restarts" else {},
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        eval_strategy="epoch" if has_val else "no",
        save_strategy="epoch" if has_val else "no",
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False if has_val else None,
        save_total_limit=1 if has_val else None,
        save_only_model=True,
        prediction_loss_only=True,
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        remove_unused_columns=False,
        label_names=["labels"],
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not on_cuda,
        fp16=on_cuda and cfg.compute_dtype == "float16",
        bf16=on_cuda and cfg.compute_dtype == "bfloat16",
        activation_checkpointing=on_cuda,  # transformers >= 5.24's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False} if on_cuda else None,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=_PromptDataset(train),
        eval_dataset=_PromptDataset(val) if has_val else None,
        data_collator=VlmCollator(processor),
        digits=DigitTokens.from_tokenizer(processor.tokenizer),
        mse_weight=cfg.mse_weight,
        positive_weight=cfg.positive_weight,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints every step's dict to stdout; logged here instead
    trainer.add_callback(_log_callback())
    return trainer


def _log_callback() -> Any:
    """A TrainerCallback that sends progress to crashcast's log: the loss about 20 times per run and
    every validation."""
    from transformers import TrainerCallback

    class LogProgress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            logs = logs or {}
            every = max(1, state.max_steps // 20)
            if "eval_loss" in logs:
                log.info("epoch %.2f: validation loss %.4f", logs.get("epoch", state.epoch or 0), float(logs["eval_loss"]))
            elif "loss" in logs and (state.global_step % every == 0 or state.global_step == state.max_steps):
                log.info("step %d/%d (epoch %.2f): loss %.4f%s", state.global_step, state.max_steps, state.epoch or 0,
                         float(logs["loss"]), "".join(f", {k} {float(logs[k]):.4f}" for k in ("ce", "mse") if k in logs))

    return LogProgress()


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What one fine-tuning run produced. `losses`: the training loss of every optimizer step;
    `eval_losses`: the validation loss after each epoch; `best_eval_loss` and `best_checkpoint` (the
    Trainer's checkpoint name, `checkpoint-<step>`) the epoch kept; `val_scores` the kept model's continuous scores of the validation prompts (in order),
    scored in memory right after training; `metrics` what the model card records."""

    out_dir: Path
    losses: list[float]
    eval_losses: list[float]
    best_eval_loss: float | None
    best_checkpoint: str | None
    data_hash: str
    val_hash: str
    n_train: int
    n_val: int
    val_scores: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def _score_metrics(scores: Sequence[float], prompts: Sequence[Prompt], failures: int) -> dict[str, Any]:
    """Validation summary: MAE and Brier against the soft targets, mean score per class, parse failures."""
    if not prompts:
        return {}
    targets = [p.soft_target for p in prompts]
    pos = [s for s, p in zip(scores, prompts, strict=True) if p.label == 1]
    neg = [s for s, p in zip(scores, prompts, strict=True) if p.label != 1]
    n = len(prompts)
    return {
        "val_mae": sum(abs(s - t) for s, t in zip(scores, targets, strict=True)) / n,
        "val_brier": sum((s - p.label) ** 2 for s, p in zip(scores, prompts, strict=True)) / n,
        "val_mean_score_positive": sum(pos) / len(pos) if pos else None,
        "val_mean_score_negative": sum(neg) / len(neg) if neg else None,
        "val_parse_failures": failures,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("crashcast", "torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def write_model_card(out_dir: Path, cfg: VlmConfig, result: TrainResult, train: Sequence[Prompt]) -> None:
    """README.md (for people and the hub) and model.json, the folder's one card: the risk model it
    is (`kind`, its settings as `params`, no calibration yet) and what it was trained on (`training`:
    prompt hashes and counts, metrics, versions), so `load_model`, `load_trained` and a later `fit`
    (which reuses an adapter trained on the same prompts with the same settings) all read it."""
    from crashcast.risk.calibration import Calibrator
    from crashcast.runtime.store import atomic_write_json, atomic_write_text

    templates = sorted({p.template for p in train})
    n_pos = sum(p.label == 1 for p in train)
    card = {
        "kind": f"vlm-{cfg.mode}",
        "features": [],
        "calibration": Calibrator().to_dict(),
        "params": cfg.model_dump(mode="json"),
        "adapter": True,
        "training": {
            "config": cfg.model_dump(mode="json"),  # what it was trained with, whatever later loads override
            "data": {"train_hash": result.data_hash, "val_hash": result.val_hash, "n_train": result.n_train,
                     "n_train_positive": n_pos, "n_val": result.n_val, "templates": templates},
            "metrics": result.metrics,
            "versions": _versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    atomic_write_json(out_dir / MODEL_CARD_JSON, card)
    m = result.metrics
    lines = [
        "---",
        f"base_model: {cfg.base_model}",
        "library_name: peft",
        f"tags: [crashcast, collision-risk, lora{', qlora' if cfg.quantization == 'nf4' else ''}]",
        "---",
        "",
        f"# crashcast VLM risk model ({cfg.mode})",
        "",
        f"A LoRA adapter (r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, on "
        f"{', '.join(cfg.lora.target_modules)}) for `{cfg.base_model}` "
        f"({'4-bit NF4' if cfg.quantization == 'nf4' else 'unquantized'} base), trained by crashcast to answer "
        "`Collision Probability: 0.xyz` for a dashcam window's prompt (three keyframe overlays and an object table).",
        "",
        f"- loss: cross-entropy on the answer{f' + {cfg.mse_weight} x MSE of the expected-digit probability (positives x {cfg.positive_weight})' if cfg.mse_weight > 0 else ''}",
        f"- data: {result.n_train} training prompts ({n_pos} positive; negatives kept: {cfg.negative_fraction:.3g}), "
        f"{result.n_val} validation prompts; prompt template {', '.join(templates) or '-'}",
        f"- training data sha256: `{result.data_hash}`",
        f"- schedule: lr {cfg.learning_rate:g}, {cfg.epochs:g} epochs, batch {cfg.batch_size} x "
        f"{cfg.gradient_accumulation} accumulation, {cfg.scheduler}"
        f"{f' ({cfg.num_cycles} cycles)' if cfg.scheduler == 'cosine_with_restarts' else ''}, warmup {cfg.warmup_ratio:g}",
        f"- best validation loss: {result.best_eval_loss}" if result.best_eval_loss is not None else "- no validation split",
        "",
        "## Metrics",
        "",
        *[f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in m.items()],
        "",
        f"Load with `crashcast.risk.models.load_model('{out_dir.name}')`; the settings it was trained with and "
        f"its training record are in `{MODEL_CARD_JSON}`.",
        "",
    ]
    atomic_write_text(out_dir / "README.md", "\n".join(lines))


def train_vlm(train: Sequence[Prompt], val: Sequence[Prompt], cfg: VlmConfig, out_dir: Path,
              device: str = "auto", weights_dir: Path | None = None, keep_checkpoints: bool = False) -> TrainResult:
    """Fine-tune `cfg.base_model` on `train` (negatives down-sampled per `cfg.negative_fraction`),
    validating on `val` each epoch, and write the best adapter + model card into `out_dir`.
    `keep_checkpoints` leaves the Trainer's epoch checkpoints in `out_dir/checkpoints`."""
    if cfg.mode == "zero-shot":
        raise ConfigError("vlm.mode zero-shot has nothing to train; use the paper-baseline or paper-enhanced preset")
    packages.require(vlm_requires(cfg, training=True), f"fine-tuning the VLM ({cfg.mode})")  # before any work
    train = downsample(train, cfg.negative_fraction, cfg.seed)
    if not train:
        raise ConfigError("no training prompts")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("training %s on %d prompts (%d positive), validating on %d", cfg.mode, len(train),
             sum(p.label == 1 for p in train), len(val))
    model, processor, device = prepare_model(cfg, device, weights_dir)
    trainer = make_trainer(model, processor, train, val, cfg, out_dir, device)
    trainer.train()
    history = trainer.state.log_history
    result = TrainResult(
        out_dir=out_dir,
        losses=[h["loss"] for h in history if "loss" in h],
        eval_losses=[h["eval_loss"] for h in history if "eval_loss" in h],
        best_eval_loss=trainer.state.best_metric,
        best_checkpoint=Path(trainer.state.best_model_checkpoint).name if trainer.state.best_model_checkpoint else None,
        data_hash=prompts_hash(train),
        val_hash=prompts_hash(val),
        n_train=len(train),
        n_val=len(val),
    )
    if not trainer.is_world_process_zero():
        return result
    trainer.model.eval()
    if val:
        scorer = RiskVlm(trainer.model, processor, cfg, device)
        scored = scorer.score(val, batch_size=max(cfg.batch_size, 4))
        result.val_scores = [s.probability for s in scored]
        result.metrics.update(_score_metrics(result.val_scores, val, sum(s.written is None for s in scored)))
    result.metrics.update({
        "train_loss_first": result.losses[0] if result.losses else None,
        "train_loss_last": result.losses[-1] if result.losses else None,
        "eval_losses": result.eval_losses,
        "best_eval_loss": result.best_eval_loss,
        "steps": trainer.state.global_step,
    })
    trainer.model.save_pretrained(str(out_dir), safe_serialization=True)
    write_model_card(out_dir, cfg, result, train)
    if not keep_checkpoints:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    log.info("adapter and model card written to %s (%s)", out_dir, json.dumps(
        {k: v for k, v in asdict(result).items() if k in ("best_eval_loss", "n_train", "n_val")}))
    return result
