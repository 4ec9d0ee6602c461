"""Base models beside Qwen2.5-VL: the tiny random Qwen2.5-VL (`random:tiny`) and Qwen3-VL
(`random:tiny-qwen3-vl`) go through the same loading, LoRA, training and scoring code.

- Each tiny build is its real transformers architecture (loaded by `AutoModelForImageTextToText`),
  deterministic, with one token per digit and a ChatML template with vision blocks.
- LoRA adapts exactly the named modules of the language model (computed here from the config's
  layer count), never the vision tower's, on both architectures; a name found only in the vision
  tower is refused.
- One optimizer step of LoRA (`quantization: none`) and of QLoRA (`nf4`, bitsandbytes on the CPU)
  on each architecture: the adapters' weights move, the base model's do not; the trained model
  scores prompts (written number parsed or the error recorded, probability in [0, 1]) differently
  from the base model; the saved adapter reloads through `load_vlm` and scores the same.
- The bf16 LoRA mode: a bfloat16 base (what `compute_dtype: bfloat16` loads on CUDA) gets float32
  adapters and trains.
- `train_vlm` + `load_trained` end to end on Qwen3-VL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from crashcast.config import load_config
from crashcast.errors import ConfigError
from crashcast.prompts.builder import Prompt

pytest.importorskip("transformers")
pytest.importorskip("peft")

#: random:<name> -> (config.model_type, the model class AutoModelForImageTextToText loads)
ARCHITECTURES = {
    "random:tiny": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
    "random:tiny-qwen3-vl": ("qwen3_vl", "Qwen3VLForConditionalGeneration"),
}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def _png(path: Path, rgb: tuple[int, int, int], k: int) -> Path:
    from PIL import Image

    a = np.zeros((56, 56, 3), np.uint8)
    a[:] = rgb
    a[8 + 12 * k: 20 + 12 * k, 10:40] = 255
    Image.fromarray(a).save(path)
    return path


def _prompt(pid: str, label: int, target: float, images: tuple[Path, ...], text: str) -> Prompt:
    return Prompt(id=pid, images=images, text=text, assistant=f"Collision Probability: {target:.3f}",
                  template="test", clip_id=pid, phase="mid", horizon_s=0.0, label=label, soft_target=target)


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> list[Prompt]:
    """Two positives (red, close) and two negatives (blue, far), three 56x56 keyframes each."""
    folder = tmp_path_factory.mktemp("arch-windows")
    red = tuple(_png(folder / f"red{k}.png", (200, 40, 40), k) for k in range(3))
    blue = tuple(_png(folder / f"blue{k}.png", (40, 40, 200), k) for k in range(3))
    return [
        _prompt("p0", 1, 0.9, red, "Object A: car, 2.0 m ahead, closing at 8 m/s."),
        _prompt("n0", 0, 0.1, blue, "Object A: car, 30.0 m ahead, moving away."),
        _prompt("p1", 1, 0.9, red, "Object A: car, 3.5 m ahead, closing at 6 m/s."),
        _prompt("n1", 0, 0.1, blue, "Object A: truck, 42.0 m ahead, moving away."),
    ]


def _cfg(base_model: str, quantization: str = "none", *overrides: str):
    return load_config("paper-baseline", [f"vlm.base_model={base_model}", f"vlm.quantization={quantization}",
                                          "vlm.max_new_tokens=6", *overrides]).vlm


def _adapted(model) -> set[str]:
    """The qualified names (relative to the base model) of the modules that carry a LoRA adapter."""
    prefix = "base_model.model."
    return {n.removeprefix(prefix) for n, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}


def _expected(config, names: tuple[str, ...]) -> set[str]:
    """The language model's modules called `names`, from the config alone: every decoder layer's
    attention projections and MLP projections."""
    out = set()
    for i in range(config.text_config.num_hidden_layers):
        layer = f"model.language_model.layers.{i}"
        out |= {f"{layer}.self_attn.{n}" for n in names if n in ATTENTION}
        out |= {f"{layer}.mlp.{n}" for n in names if n in MLP}
    return out


def _need_nf4(quantization: str) -> None:
    if quantization == "nf4":
        pytest.importorskip("bitsandbytes")


# --------------------------------------------------------------------------------------------------
# the tiny builds
# --------------------------------------------------------------------------------------------------


def test_tiny_qwen3_vl_is_the_real_architecture_and_deterministic(tmp_path, offline_caches):
    import hashlib

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from crashcast.risk.tiny_vlm import build_tiny_qwen3_vl
    from crashcast.risk.vlm_output import ANSWER_PREFIX, DigitTokens

    a, b = build_tiny_qwen3_vl(tmp_path / "a"), build_tiny_qwen3_vl(tmp_path / "b")

    def files(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert files(a) == files(b)
    model = AutoModelForImageTextToText.from_pretrained(a)
    processor = AutoProcessor.from_pretrained(a)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration" and model.config.model_type == "qwen3_vl"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    text, vision = model.config.text_config, model.config.vision_config
    for width in (text.hidden_size, text.intermediate_size, vision.hidden_size, vision.intermediate_size,
                  text.num_key_value_heads * text.head_dim):
        assert width % 64 == 0  # bitsandbytes' 4-bit layers
    assert vision.patch_size == 16 and list(vision.deepstack_visual_indexes) == [0]
    assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied, like the 2B/4B
    digits = DigitTokens.from_tokenizer(processor.tokenizer)
    ids = processor.tokenizer.encode(ANSWER_PREFIX + "0.872", add_special_tokens=False)
    assert ids[-5:] == [digits.digit_ids[0], digits.point_ids[0], *(digits.digit_ids[d] for d in (8, 7, 2))]
    messages = [{"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": "hi"}]}]
    chat = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"


def test_each_random_tiny_name_resolves_to_its_own_architecture(tiny_cache, offline_caches):
    from crashcast.risk.vlm import resolve_base_model, vlm_weights

    folders = {}
    for name, (model_type, cls) in ARCHITECTURES.items():
        folder = Path(resolve_base_model(name))
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == model_type and config["architectures"] == [cls]
        assert resolve_base_model(name) == str(folder)  # cached
        assert vlm_weights(_cfg(name)) == []  # nothing to download
        folders[name] = folder
    assert len(set(folders.values())) == len(ARCHITECTURES)
    with pytest.raises(ConfigError, match="random:tiny-qwen3-vl"):
        resolve_base_model("random:tiny-qwen9")


def test_qwen3_vl_hub_ids_are_known_weights():
    from crashcast.risk.vlm import vlm_weights

    for hub_id in ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct"):
        [wf] = vlm_weights(_cfg(hub_id))
        assert wf.name == hub_id and wf.source == "huggingface" and wf.licence == "Apache-2.0"
        assert "*.safetensors" in wf.files


# --------------------------------------------------------------------------------------------------
# LoRA targets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base_model", list(ARCHITECTURES))
@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ATTENTION + MLP])
def test_lora_adapts_exactly_the_language_models_named_modules(base_model, targets, tiny_cache, offline_caches):
    from crashcast.risk.finetune import language_model_name, prepare_model

    cfg = _cfg(base_model, "none", f"vlm.lora.target_modules={json.dumps(list(targets))}")
    model, _, _ = prepare_model(cfg, "cpu")
    base = model.get_base_model()
    assert language_model_name(base) == "model.language_model"
    expected = _expected(base.config, targets)
    assert _adapted(model) == expected
    # the names alone would have reached further: Qwen2.5-VL's vision MLP has gate/up/down_proj too
    by_name = {n for n, _ in base.named_modules() if n.rsplit(".", 1)[-1] in targets and "lora_" not in n}
    by_name = {n.removesuffix(".base_layer") for n in by_name}
    assert expected <= by_name
    if base_model == "random:tiny" and "gate_proj" in targets:
        assert any(n.startswith("model.visual.") for n in by_name - expected)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)


@pytest.mark.parametrize(("base_model", "vision_only"), [("random:tiny", "qkv"), ("random:tiny-qwen3-vl", "linear_fc1")])
def test_a_target_found_only_in_the_vision_tower_is_refused(base_model, vision_only, tiny_cache, offline_caches):
    from crashcast.risk.finetune import prepare_model

    cfg = _cfg(base_model, "none", f'vlm.lora.target_modules=["q_proj", "{vision_only}"]')
    with pytest.raises(ConfigError, match=rf"{vision_only}: no such module in the language model.*q_proj"):
        prepare_model(cfg, "cpu")


# --------------------------------------------------------------------------------------------------
# one training step, scoring, reloading
# --------------------------------------------------------------------------------------------------


def _state(model, lora: bool) -> dict:
    """A copy of the LoRA parameters (lora) or of everything else in the state dict (the base model,
    4-bit weights and their quantization state included)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if ("lora_" in k) == lora and hasattr(v, "clone")}


@pytest.mark.parametrize("quantization", ["none", "nf4"])
@pytest.mark.parametrize("base_model", list(ARCHITECTURES))
def test_one_lora_step_then_scoring_and_reloading(base_model, quantization, tiny_cache, offline_caches, windows,
                                                  tmp_path):
    _need_nf4(quantization)
    import torch

    from crashcast.risk.finetune import make_trainer, prepare_model
    from crashcast.risk.vlm import RiskVlm, load_vlm

    cfg = _cfg(base_model, quantization, "vlm.learning_rate=1e-2", "vlm.epochs=1", "vlm.batch_size=2",
               "vlm.gradient_accumulation=2", "vlm.lora.dropout=0")
    model, processor, device = prepare_model(cfg, "cpu")
    assert getattr(model.get_base_model(), "is_loaded_in_4bit", False) == (quantization == "nf4")
    if quantization == "none":
        assert all(p.dtype == torch.float32 for p in model.parameters())  # float32 on a CPU
    base_before, lora_before = _state(model, lora=False), _state(model, lora=True)
    trainer = make_trainer(model, processor, windows, [], cfg, tmp_path / "run", device)
    trainer.train()
    assert trainer.state.global_step == 1  # 4 prompts, batch 2 x accumulation 2
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)

    base_after, lora_after = _state(model, lora=False), _state(model, lora=True)
    assert base_after.keys() == base_before.keys()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)  # the base model is frozen
    moved = [k for k in lora_before if not torch.equal(lora_before[k], lora_after[k])]
    assert {k for k in moved if ".lora_B." in k} == {k for k in lora_before if ".lora_B." in k}  # off their zero start

    scorer = RiskVlm(model, processor, cfg, device)
    scored = scorer.score(windows, batch_size=2)
    assert [s.id for s in scored] == [p.id for p in windows]
    for s in scored:
        assert math.isfinite(s.probability) and 0.0 <= s.probability <= 1.0
        assert (s.written is None) == (s.error is not None) and s.source in ("generated", "forced")
    with model.disable_adapter():
        base_scores = [s.probability for s in scorer.score(windows, batch_size=2)]
    assert max(abs(s.probability - b) for s, b in zip(scored, base_scores, strict=True)) > 1e-4  # the adapter acts

    model.save_pretrained(str(tmp_path / "adapter"))
    reloaded = load_vlm(cfg, adapter=tmp_path / "adapter", device="cpu")
    assert type(reloaded.model.get_base_model()) is type(model.get_base_model())
    again = reloaded.score(windows, batch_size=2)
    assert [s.probability for s in again] == pytest.approx([s.probability for s in scored], abs=1e-4)
    assert [s.text for s in again] == [s.text for s in scored]


@pytest.mark.parametrize("base_model", list(ARCHITECTURES))
def test_bf16_lora_has_float32_adapters_over_a_bfloat16_base(base_model, tiny_cache, offline_caches, windows,
                                                             monkeypatch, tmp_path):
    """`quantization: none` with `compute_dtype: bfloat16` loads the base in bf16 on CUDA; here the
    same is forced on the CPU: the frozen base stays bf16, the adapters are float32, and a training
    loss backpropagates into them."""
    import torch

    from crashcast.risk import vlm
    from crashcast.risk.finetune import VlmCollator, make_trainer, prepare_model

    cfg = _cfg(base_model, "none", "vlm.compute_dtype=bfloat16")
    assert vlm.torch_dtype(cfg, "cuda:0") == torch.bfloat16 and vlm.torch_dtype(cfg, "cpu") == torch.float32
    monkeypatch.setattr(vlm, "torch_dtype", lambda cfg, device: torch.bfloat16)
    model, processor, device = prepare_model(cfg, "cpu")
    dtypes: dict[bool, set] = {True: set(), False: set()}
    for n, p in model.named_parameters():
        dtypes[("lora_" in n)].add(p.dtype)
    assert dtypes == {True: {torch.float32}, False: {torch.bfloat16}}
    trainer = make_trainer(model, processor, windows, [], cfg, tmp_path, device)
    loss = trainer.compute_loss(model, VlmCollator(processor)(windows[:2]))
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if ".lora_B." in n]  # A has none while B is zero
    assert grads and all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


# --------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_train_vlm_and_load_trained_on_qwen3_vl(quantization, tiny_cache, offline_caches, windows, tmp_path):
    _need_nf4(quantization)
    from safetensors import safe_open

    from crashcast.risk.finetune import train_vlm
    from crashcast.risk.vlm import MODEL_CARD_JSON, load_trained

    cfg = _cfg("random:tiny-qwen3-vl", quantization, "vlm.learning_rate=1e-2", "vlm.epochs=1",
               "vlm.gradient_accumulation=1", "vlm.batch_size=2")
    out = tmp_path / "model"
    result = train_vlm(windows, windows[:2], cfg, out, device="cpu")
    assert len(result.losses) == 2 and all(math.isfinite(v) for v in result.losses)
    assert len(result.val_scores) == 2 and all(0.0 <= v <= 1.0 for v in result.val_scores)
    card = json.loads((out / MODEL_CARD_JSON).read_text())
    assert card["params"]["base_model"] == "random:tiny-qwen3-vl" and card["params"]["quantization"] == quantization
    readme = (out / "README.md").read_text()
    assert ("qlora" in readme) == (quantization == "nf4")
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(".language_model.layers." in k for k in keys)
    again = load_trained(out, device="cpu").score(windows[:2], batch_size=2)
    assert [s.probability for s in again] == pytest.approx(result.val_scores, abs=1e-4)
