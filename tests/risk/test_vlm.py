"""The tiny Qwen2.5-VL and scoring: the tiny build is deterministic and loads offline like a hub model
(`random:tiny` resolves to a cached build); zero-shot scoring of real builder prompts returns valid
objects with parse failures recorded; left-padded batches score as single prompts do; NF4 loads."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from crashcast.config import load_config
from crashcast.errors import ConfigError, ModelError
from crashcast.features.window_meta import read_window_meta
from crashcast.prompts.builder import Prompt, build_prompt

pytest.importorskip("transformers")

GOLDEN = Path(__file__).parents[1] / "prompts" / "golden"


def _png(path: Path, rgb: tuple[int, int, int], size: int = 56) -> Path:
    from PIL import Image

    a = np.zeros((size, size, 3), np.uint8)
    a[:] = rgb
    a[size // 4: size // 2, size // 4: 3 * size // 4] = 255
    Image.fromarray(a).save(path)
    return path


def _prompt(pid: str, images: tuple[Path, ...], text: str, target: float, label: int) -> Prompt:
    return Prompt(id=pid, images=images, text=text, assistant=f"Collision Probability: {target:.3f}",
                  template="test", clip_id=pid, phase="mid", horizon_s=0.0, label=label, soft_target=target)


@pytest.fixture
def golden_prompts(tmp_path) -> list[Prompt]:
    """The checked-in window's real prompt (the risk_v1 template, three 56x56 keyframes), with and
    without the rationale line."""
    folder = tmp_path / "clips" / "00822" / "mid"
    folder.mkdir(parents=True)
    shutil.copy(GOLDEN / "window_meta.json", folder / "window_meta.json")
    for k in range(3):
        _png(folder / f"kf{k}.png", (60 * k, 100, 200 - 60 * k))
    meta = read_window_meta(folder / "window_meta.json")
    return [build_prompt(meta, folder), build_prompt(meta, folder, rationale=True)]


def _cfg(preset: str, *overrides: str):
    return load_config(preset, ["vlm.base_model=random:tiny", *overrides]).vlm


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_tiny_vlm_is_deterministic_and_loads_offline(tmp_path, offline_caches):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from crashcast.risk.tiny_vlm import build_tiny_vlm
    from crashcast.risk.vlm_output import ANSWER_PREFIX, DigitTokens

    a, b = build_tiny_vlm(tmp_path / "a"), build_tiny_vlm(tmp_path / "b")
    assert _files(a) == _files(b)
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= set(_files(a))

    processor = AutoProcessor.from_pretrained(a)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(a)
    text, vision = model.config.text_config, model.config.vision_config
    # bitsandbytes' 4-bit layers need widths that are multiples of 64
    for width in (text.hidden_size, text.intermediate_size, vision.hidden_size, vision.intermediate_size,
                  text.num_key_value_heads * text.hidden_size // text.num_attention_heads):
        assert width % 64 == 0
    digits = DigitTokens.from_tokenizer(processor.tokenizer)  # raises unless one token per digit
    ids = processor.tokenizer.encode(ANSWER_PREFIX + "0.872", add_special_tokens=False)
    assert ids[-5:] == [digits.digit_ids[0], digits.point_ids[0], *(digits.digit_ids[d] for d in (8, 7, 2))]
    messages = [{"role": "user", "content": [{"type": "image", "image": "x.png"}, {"type": "text", "text": "hi"}]}]
    chat = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>" in chat
    assert chat.endswith("<|im_start|>assistant\n")


def test_random_tiny_resolves_to_one_cached_build(tiny_cache):
    from crashcast.risk.vlm import resolve_base_model

    first = Path(resolve_base_model("random:tiny"))
    assert first.parent == tiny_cache and (first / "config.json").exists()
    assert Path(resolve_base_model("random:tiny")) == first
    assert not [p for p in tiny_cache.iterdir() if p.name.startswith(".tiny-vlm-")]  # no temporary folders left
    with pytest.raises(ConfigError, match="random:huge"):
        resolve_base_model("random:huge")
    assert resolve_base_model(str(first)) == str(first)


def test_zero_shot_scores_real_prompts_and_records_parse_failures(tiny_cache, offline_caches, golden_prompts):
    from crashcast.risk.vlm import VlmAnswer, load_vlm

    cfg = _cfg("paper-zero-shot", "vlm.max_new_tokens=8")
    vlm = load_vlm(cfg, adapter=None, device="cpu")
    assert next(vlm.model.parameters()).dtype.is_floating_point
    text_only = _prompt("no-images", (), "Object A: car, 4.0 m ahead.", 0.5, 1)
    prompts = [*golden_prompts, text_only]
    scored = vlm.score(prompts, batch_size=2)
    assert [s.id for s in scored] == [p.id for p in prompts]
    for s in scored:
        assert isinstance(s, VlmAnswer)
        assert math.isfinite(s.probability) and 0.0 <= s.probability <= 1.0
        assert isinstance(s.text, str) and s.source in ("generated", "forced")
        assert (s.written is None) == (s.error is not None)
        if s.written is None:
            assert s.source == "forced"  # nothing readable was generated: the teacher-forced reading
    # a random model writes no readable answer (deterministic: seeded weights, greedy decoding)
    assert any(s.error for s in scored)
    # the forced reading depends on the input (not a constant)
    assert len({round(s.probability, 6) for s in scored}) > 1


def test_the_forced_reading_keeps_only_the_answers_logits(tiny_cache, offline_caches, golden_prompts):
    """The teacher-forced reading asks the model for the last few positions' logits only (at full size
    the whole sequence's would be tens of GB); it equals the reading of the full logits."""
    import torch

    from crashcast.risk.vlm import ANSWER_PREFIX, FORCED_ANSWER, load_vlm
    from crashcast.risk.vlm_output import find_answer, read_answers

    vlm = load_vlm(_cfg("paper-zero-shot"), adapter=None, device="cpu")
    text_only = _prompt("no-images", (), "Object A: car, 4.0 m ahead.", 0.5, 1)
    prompts = [*golden_prompts, text_only]  # rows of different lengths: left padding
    inputs = vlm._inputs(prompts, suffix=ANSWER_PREFIX + FORCED_ANSWER)
    ids = inputs["input_ids"]
    tail = len(vlm.processor.tokenizer.encode(FORCED_ANSWER, add_special_tokens=False))
    tokens = torch.full_like(ids, -100)
    tokens[:, -tail:] = ids[:, -tail:]
    with torch.inference_mode():
        logits = vlm.model(**inputs).logits  # every position
    assert logits.shape[1] == ids.shape[1]
    answers = [find_answer(r, vlm.digits, min_index=1) for r in tokens.tolist()]
    full = read_answers(logits, answers, vlm.digits, shift=1).probability
    np.testing.assert_allclose(vlm._forced(prompts), [float(v) for v in full], rtol=1e-5, atol=1e-6)


def test_left_padded_batches_score_like_single_prompts(tiny_cache, offline_caches, tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from crashcast.risk.vlm import load_vlm

    cfg = _cfg("paper-baseline", "vlm.max_new_tokens=6")  # NF4, as a fine-tuned model is scored
    vlm = load_vlm(cfg, adapter=None, device="cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in vlm.model.modules())
    images = tuple(_png(tmp_path / f"k{k}.png", (30 * k, 80, 160)) for k in range(3))
    prompts = [_prompt(f"w{i}", images if i != 2 else (), "Object A is close. " * (1 + 3 * i), 0.1, 0)
               for i in range(4)]
    batched = vlm.score(prompts, batch_size=4)
    single = [vlm.score([p], batch_size=1)[0] for p in prompts]
    for b, s in zip(batched, single, strict=True):
        assert b.text == s.text
        assert b.probability == pytest.approx(s.probability, abs=1e-4)


def test_load_vlm_rejects_a_folder_without_an_adapter(tiny_cache, offline_caches, tmp_path):
    from crashcast.risk.vlm import load_vlm

    with pytest.raises(ModelError, match=r"adapter_config\.json: missing"):
        load_vlm(_cfg("paper-zero-shot"), adapter=tmp_path, device="cpu")
