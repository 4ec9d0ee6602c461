"""Qwen2.5-VL as a collision-risk scorer: loading (optionally 4-bit NF4, optionally with a LoRA
adapter) and batched scoring of prompts (the paper, §5).

The base model is whatever `AutoModelForImageTextToText` loads whose processor takes crashcast's
chat messages (image entries, then the text) through a ChatML template (`<|im_start|>assistant`,
`<|im_end|>`) and whose tokenizer writes each digit as one token: Qwen2.5-VL (the paper's
3B-Instruct), Qwen2-VL and Qwen3-VL (2B/4B-Instruct) are such models; `random:tiny` and
`random:tiny-qwen3-vl` are tiny random ones (crashcast.risk.tiny_vlm). docs/VLM_MODELS.md compares them.

One generation per window gives both readings of `crashcast.risk.vlm_output`:
- `written`: the number the model wrote, parsed from the generated text (a failure is recorded in
  `error`, never raised);
- `probability`: the continuous score, the expected value of the answer's digit tokens under the
  model's distribution (what AP, AUC and calibration are computed on). Read from the generation's
  own logits when the answer holds a number after `Collision Probability: `; otherwise (a zero-shot
  model that wandered off) from one teacher-forced forward pass over the prompt followed by
  `Collision Probability: 0.000`, so every window gets a model-derived score. `source` says which.

Device and precision: bf16/fp16 on CUDA (the config's `compute_dtype`), float32 on CPU (half
precision CPU kernels are slow or missing). NF4 needs bitsandbytes; without it the model loads
unquantized with a warning. The processor pads on the left for generation.

Heavy imports (torch, transformers, peft, PIL) happen inside the functions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crashcast.errors import ConfigError
from crashcast.prompts.builder import Prompt
from crashcast.prompts.exports import chat_messages
from crashcast.risk.vlm_output import ANSWER_PREFIX, DigitTokens, find_answer, parse_probability, read_answers
from crashcast.runtime.store import read_text_bounded
from crashcast.settings import VlmConfig

if TYPE_CHECKING:
    import torch

    from crashcast.runtime.weights import WeightFile

log = logging.getLogger(__name__)

MODEL_CARD_JSON = "model.json"  # the one card of a model folder (`risk.base.MODEL_JSON`)
#: the second card crashcast < 0.2 wrote beside model.json; still read
LEGACY_CARD_JSON = "crashcast_model.json"
"""What `train_vlm` writes beside the adapter: the config, the data hash and the metrics."""
RATIONALE_TOKENS = 48
"""About how many tokens an answer with its `Reason:` line takes with Qwen's tokenizer."""
FORCED_ANSWER = "0.000"
"""The digits a teacher-forced reading feeds after the prefix; only their positions matter for the
lead digit, and the decimals are read conditioned on them (see vlm_output)."""


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


#: Qwen2.5-VL and Qwen3-VL checkpoints: (download size in MB of the safetensors, None where not
#: recorded here; licence of the weights as the hub card states it: the Qwen2.5-VL 3B and 72B weights
#: are not Apache-2.0, unlike the code; Qwen3-VL's are)
QWEN_VL_WEIGHTS: dict[str, tuple[float | None, str]] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": (7510, "Qwen-Research (non-commercial)"),
    "Qwen/Qwen2.5-VL-7B-Instruct": (16580, "Apache-2.0"),
    "Qwen/Qwen2.5-VL-32B-Instruct": (66700, "Apache-2.0"),
    "Qwen/Qwen2.5-VL-72B-Instruct": (146800, "Qwen (see the model card)"),
    "Qwen/Qwen3-VL-2B-Instruct": (4264, "Apache-2.0"),
    "Qwen/Qwen3-VL-4B-Instruct": (None, "Apache-2.0"),
}


def vlm_weights(cfg: VlmConfig) -> list[WeightFile]:
    """The weights `cfg.base_model` needs (`crashcast weights`): none for `random:` models and local folders."""
    from crashcast.runtime.weights import WeightFile, is_random

    name = cfg.base_model
    if is_random(name) or Path(name).expanduser().exists():
        return []
    size, licence = QWEN_VL_WEIGHTS.get(name, (None, "see the model card"))
    return [WeightFile(name, "huggingface", licence, size, f"https://huggingface.co/{name}",
                       ("*.json", "*.jinja", "*.safetensors", "merges.txt", "vocab.json"))]


def vlm_requires(cfg: VlmConfig, training: bool = False) -> list[str]:
    """The packages (import names) the VLM `cfg` needs: torch and transformers; peft to train or load
    an adapter (the fine-tuned modes); accelerate to train (the HF Trainer). bitsandbytes is not
    required: without it NF4 falls back to an unquantized model, with a warning (`use_nf4`)."""
    return (["torch", "transformers"] + (["peft"] if cfg.mode != "zero-shot" else [])
            + (["accelerate"] if training else []))


def resolve_base_model(base_model: str, weights_dir: Path | None = None) -> str:
    """Where to load `base_model` from: `random:tiny` (Qwen2.5-VL) or `random:tiny-qwen3-vl` -> the
    cached tiny model's folder; a local folder as is; a hub id through the weights folder in force
    (`weights_dir`, else $CRASHCAST_WEIGHTS_DIR: the same rule as every perception backend,
    `runtime.context`)."""
    from crashcast.risk.tiny_vlm import tiny_models, tiny_name, tiny_vlm_path
    from crashcast.runtime.context import weights_dir_for
    from crashcast.runtime.weights import RANDOM_PREFIX, is_random, resolve

    name = tiny_name(base_model)
    if name is not None:
        return str(tiny_vlm_path(name=name))
    if is_random(base_model):
        known = ", ".join(RANDOM_PREFIX + n for n in tiny_models())
        raise ConfigError(f"vlm.base_model: {base_model}: unknown random model (there are {known})")
    return resolve(base_model, weights_dir_for(None, weights_dir))


def torch_dtype(cfg: VlmConfig, device: str) -> torch.dtype:
    """The dtype weights load in and compute runs at: the config's `compute_dtype` on CUDA, float32
    elsewhere."""
    import torch

    if not device.startswith("cuda"):
        return torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[cfg.compute_dtype]


def use_nf4(cfg: VlmConfig) -> bool:
    """Whether the base model loads in 4-bit NF4: asked for and bitsandbytes importable."""
    if cfg.quantization != "nf4":
        return False
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        log.warning("vlm.quantization nf4: bitsandbytes is not installed; loading the model unquantized "
                    "(pip install 'crashcast[vlm]')")
        return False
    return True


def load_processor(cfg: VlmConfig, path: str, padding_side: Literal["left", "right"] = "left") -> Any:
    """The model's processor (tokenizer + image processor) with `max_pixels` applied."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = padding_side
    if cfg.max_pixels is not None:
        ip = processor.image_processor
        size = dict(getattr(ip, "size", None) or {})
        shortest = min(int(size.get("shortest_edge") or 56 * 56), cfg.max_pixels)
        ip.size = {"shortest_edge": shortest, "longest_edge": cfg.max_pixels}
    return processor


def load_base_model(cfg: VlmConfig, device: str, weights_dir: Path | None = None) -> tuple[Any, Any]:
    """(model, processor) of `cfg.base_model` on `device` ('cpu', 'cuda', 'cuda:1'), NF4 when
    configured; not yet wrapped in an adapter. The model is in eval mode."""
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    path = resolve_base_model(cfg.base_model, weights_dir)
    dtype = torch_dtype(cfg, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if use_nf4(cfg):
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=False,
        )
        kwargs["device_map"] = {"": device if device != "cuda" else "cuda:0"}
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ConfigError(f"vlm.base_model {cfg.base_model!r}: cannot load it from {path} ({e}); "
                          "give a local folder, a hub id reachable from here, random:tiny or random:tiny-qwen3-vl") from None
    if "device_map" not in kwargs:
        model.to(device)
    elif device == "cpu":
        _no_cpu_repacking(model)
    model.eval()
    return model, load_processor(cfg, path)


def _no_cpu_repacking(model: Any) -> int:
    """Keep bitsandbytes from repacking 4-bit weights for its bf16 CPU kernel at the first no-grad
    forward: training after a repack fails (an evaluation between epochs would break it), and the
    repacked kernel computes in bf16, so scores would differ from the float32 ones training saw."""
    n = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_vlm(cfg: VlmConfig, adapter: Path | None = None, device: str = "auto",
             weights_dir: Path | None = None) -> RiskVlm:
    """The scorer for `cfg`: the base model (zero-shot), or the base model with the LoRA adapter in
    `adapter` (a folder `train_vlm` wrote). `device` 'auto' takes CUDA when there is one."""
    from crashcast.runtime.context import resolve_device

    device = resolve_device(device)
    if adapter is not None:  # before torch or peft reads a byte of it
        from crashcast.risk.adapter_files import check_adapter

        check_adapter(adapter)
    model, processor = load_base_model(cfg, device, weights_dir)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
        model.eval()
    return RiskVlm(model, processor, cfg, device)


def training_record(folder: Path) -> dict:
    """What the adapter in `folder` was trained with: {"config": its VlmConfig settings, "data": the
    prompt hashes and counts, "metrics", "versions", "created"}, from the folder's model.json (its
    `params` and `training`), or from a crashcast < 0.2 folder's crashcast_model.json. Raises
    OSError, ValueError, KeyError or TypeError when there is none or it cannot be read."""
    folder = Path(folder)
    path = folder / MODEL_CARD_JSON
    card = json.loads(read_text_bounded(path, what="model card")) if path.exists() else {}
    if isinstance(card, dict) and isinstance(card.get("training"), dict):
        return {"config": card["params"], **card["training"]}  # the record's own "config", where written, wins
    legacy = json.loads(read_text_bounded(folder / LEGACY_CARD_JSON, what="model card"))
    return {"config": legacy["config"], **{k: v for k, v in legacy.items() if k not in ("config", "kind", "mode")}}


def load_trained(folder: Path, device: str = "auto", weights_dir: Path | None = None,
                 base_model: str | None = None) -> RiskVlm:
    """A fine-tuned model folder (adapter + model.json) loaded with the config it was trained with;
    `base_model` overrides where the base weights come from (another path to the same model)."""
    folder = Path(folder)
    try:
        config = training_record(folder)["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{folder}: no readable training record in {MODEL_CARD_JSON} ({type(e).__name__}: {e}); "
                          "not a model folder written by `crashcast train vlm`") from None
    cfg = VlmConfig.model_validate(config)
    if base_model is not None:
        cfg = cfg.model_copy(update={"base_model": base_model})
    return load_vlm(cfg, adapter=folder, device=device, weights_dir=weights_dir)


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def load_images(prompt: Prompt) -> list[Any]:
    """The prompt's keyframe images as RGB PIL images (none for a text-only prompt)."""
    from PIL import Image

    images = []
    for path in prompt.images:
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"prompt {prompt.id}: cannot read the image {path} ({e})") from None
    return images


def chat_texts(processor: Any, prompts: Sequence[Prompt], *, answers: bool,
               suffix: str = "") -> list[str]:
    """Each prompt through the model's chat template: with the assistant's answer (training), or up to
    the assistant header plus `suffix` (generation; `suffix` = a forced answer start)."""
    texts = []
    for p in prompts:
        messages = chat_messages(p, include_answer=answers)
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=not answers)
        texts.append(text + suffix)
    return texts


def encode(processor: Any, prompts: Sequence[Prompt], texts: Sequence[str]) -> dict[str, Any]:
    """The processor's batch (input_ids, attention_mask, pixel_values, image_grid_thw, ...) for
    `texts` with the prompts' images (a batch may mix prompts with and without images), padded on
    the processor's side."""
    images = [load_images(p) for p in prompts]
    batch = processor(text=list(texts), images=images if any(images) else None, return_tensors="pt", padding=True)
    return dict(batch)


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VlmAnswer:
    """One window scored. `probability`: the continuous expected-digit score in [0, 1]; `written`:
    the number parsed from `text` (None when unreadable, `error` then says why); `rationale`: the
    `Reason:` line when the model wrote one; `source`: 'generated' (read from the generation's
    logits) or 'forced' (a teacher-forced `Collision Probability: ` reading, when the generated
    text held no readable answer)."""

    id: str
    probability: float
    written: float | None
    rationale: str | None
    error: str | None
    text: str
    source: Literal["generated", "forced"]


class RiskVlm:
    """A loaded vision-language risk model: `score(prompts)`. Wraps any Qwen2.5-VL-like model (Qwen3-VL
    too) and its processor (a PeftModel too), so a model still in memory after training scores the
    same way."""

    def __init__(self, model: Any, processor: Any, cfg: VlmConfig, device: str) -> None:
        self.model = model
        self.processor = processor
        self.cfg = cfg
        self.device = device
        self.digits = DigitTokens.from_tokenizer(processor.tokenizer)
        tok = processor.tokenizer
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if cfg.rationale and cfg.max_new_tokens < RATIONALE_TOKENS:
            log.warning("vlm.rationale is on but vlm.max_new_tokens is %d: the Reason line may be cut "
                        "(about %d tokens are needed)", cfg.max_new_tokens, RATIONALE_TOKENS)

    def score(self, prompts: Sequence[Prompt], batch_size: int = 8) -> list[VlmAnswer]:
        """Score every prompt (in order), `batch_size` per generate call. Greedy decoding; never raises
        for an odd answer."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out: list[VlmAnswer] = []
        was_training = self.model.training
        self.model.eval()  # no dropout in the adapters while scoring
        try:
            for start in range(0, len(prompts), batch_size):
                out.extend(self._score_batch(list(prompts[start:start + batch_size])))
        finally:
            self.model.train(was_training)
        return out

    def _inputs(self, prompts: Sequence[Prompt], suffix: str) -> dict[str, Any]:
        tok = self.processor.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            batch = encode(self.processor, prompts, chat_texts(self.processor, prompts, answers=False, suffix=suffix))
        finally:
            tok.padding_side = side
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in batch.items()}

    def _score_batch(self, prompts: list[Prompt]) -> list[VlmAnswer]:
        import torch

        inputs = self._inputs(prompts, suffix="")
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            gen = self.model.generate(
                **inputs,
                max_new_tokens=self.cfg.max_new_tokens,
                do_sample=False,
                return_dict_in_generate=True,
                output_logits=True,
                pad_token_id=self.pad_token_id,
            )
        new_ids = gen.sequences[:, prompt_len:]
        texts = self.processor.batch_decode(new_ids, skip_special_tokens=True)
        rows = new_ids.tolist()
        answers = [find_answer(r[:len(gen.logits)], self.digits, min_index=0) for r in rows]
        probability = [0.0] * len(prompts)
        source: list[Literal["generated", "forced"]] = ["forced"] * len(prompts)
        if any(a is not None for a in answers) and gen.logits:
            logits = torch.stack(gen.logits, dim=1)
            reading = read_answers(logits, answers, self.digits, shift=0)
            for i, a in enumerate(answers):
                if a is not None:
                    probability[i], source[i] = float(reading.probability[i]), "generated"
        missing = [i for i, a in enumerate(answers) if a is None]
        if missing:
            forced = self._forced([prompts[i] for i in missing])
            for i, p in zip(missing, forced, strict=True):
                probability[i] = p
        out = []
        for i, p in enumerate(prompts):
            parsed = parse_probability(texts[i])
            out.append(VlmAnswer(p.id, min(max(probability[i], 0.0), 1.0), parsed.probability, parsed.rationale,
                              parsed.error, texts[i], source[i]))
        return out

    def _forced(self, prompts: list[Prompt]) -> list[float]:
        """The expected-digit reading of `Collision Probability: 0.000` appended to each prompt: the
        lead digit's distribution given the prompt and the prefix, the decimals given `0.`."""
        import torch

        inputs = self._inputs(prompts, suffix=ANSWER_PREFIX + FORCED_ANSWER)
        ids = inputs["input_ids"]
        tail = len(self.processor.tokenizer.encode(FORCED_ANSWER, add_special_tokens=False))
        keep = tail + 1  # the logits that score the answer's tokens: the last tail + 1 positions
        tokens = torch.full_like(ids[:, -keep:], -100)
        tokens[:, -tail:] = ids[:, -tail:]  # left padding: every row's answer sits at the end
        with torch.inference_mode():  # logits over the whole vocabulary at every position would be
            # B x L x 151,936 (about 41 GB in fp16 for 32 prompts of three 1280x720 keyframes)
            logits = self.model(**inputs, logits_to_keep=keep).logits
        rows = tokens.tolist()
        answers = [find_answer(r, self.digits, min_index=1) for r in rows]
        reading = read_answers(logits, answers, self.digits, shift=1)
        return [float(v) for v in reading.probability]
