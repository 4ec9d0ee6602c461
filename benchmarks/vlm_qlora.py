"""Memory of one NF4 + LoRA training step and batched scoring throughput of the paper's VLM.

A randomly initialised model with Qwen2.5-VL-3B-Instruct's exact architecture (3.75 B parameters:
the published config.json, written out below; nothing is downloaded) is saved once to a local folder
with a processor, and then goes through crashcast's own code, as a real checkpoint would:

1. memory: `crashcast.risk.finetune.prepare_model` (NF4 via bitsandbytes, prepared for k-bit
   training, fresh LoRA) and `make_trainer`, then `trainer.train()` over one prompt with one
   optimizer step (forward, backward, optimizer step), under the `paper-baseline` preset (LoRA r=8
   alpha=16 on q_proj, v_proj; cross-entropy) and the `paper-enhanced` one (q/k/v/o_proj; CE + 5 x
   MSE of the expected-digit probability); fp16 compute as the presets say. Reported: GPU memory
   after loading, and the peak allocated and reserved over the step (torch.cuda.max_memory_*,
   reset right before it). Goal: < 16 GB.
2. throughput: the enhanced adapter saved by step 1, reloaded with `crashcast.risk.vlm.load_vlm`,
   and `RiskVlm.score` (one `generate` per batch, expected-digit reading) over the same prompt at
   batch sizes 1, 8, 16, 32 (an untimed warm-up batch first). Goal: >= 20 windows per second.
3. tiny: `train_vlm` on the `random:tiny` model with compute_dtype bfloat16 on toy prompts (red,
   closing scenes vs blue, receding ones), both presets: first and last loss, and whether the
   reloaded adapter's scores separate the classes.

The prompt is the paper's: `build_prompt` over tests/prompts/golden/window_meta.json (three objects)
with three synthetic dashcam keyframes written at each --image-sizes (default 1280x720, the paper's
frames, and 640x360, crashcast's default extraction size), processed with Qwen2.5-VL's
preprocessor limits (min_pixels 3136, max_pixels 12845056), so the image-token count is what
Qwen2.5-VL-3B would see. The tokenizer is the tiny model's (a real Qwen2Tokenizer over a ~1k
vocabulary learnt from the prompt template, Qwen2-VL's chat template) with the 3B config's special
token ids set to the tiny tokenizer's; its text is padded to --text-tokens non-image tokens (default
600, above Qwen's own tokenization of this prompt, which has at least ~400: the printout gives the
counts). Random weights never write `Collision Probability: ...`, so every scored window also takes
the scorer's forced reading (a second forward pass) and every generation runs all max_new_tokens:
the table gives the rate as run and without the forced pass.

    python benchmarks/vlm_qlora.py --cpu-nms-shim                # this CPU: scaled down (--scale tiny), 15 s idle
    python benchmarks/vlm_qlora.py --json vlm_qlora.json         # a GPU: the full 3B architecture (est. ~5 min)

On a CPU the default is --scale tiny (2 text layers of width 256, a 2-block vision tower, a 2k
vocabulary, 320x180 keyframes): it checks that every phase runs; its figures say nothing about a GPU.
--arch picks the architecture (default qwen2.5-vl-3b, the paper's; qwen3-vl-2b and qwen3-vl-4b:
Qwen3-VL-2B/4B-Instruct's published layouts, with the tiny Qwen3-VL's tokenizer and processor at
Qwen3-VL's pixel limits, and `random:tiny-qwen3-vl` in the tiny phase); --quantization none
benchmarks the bf16 LoRA mode (the base unquantized in --compute-dtype, default bfloat16) instead of
NF4 QLoRA:

    python benchmarks/vlm_qlora.py --arch qwen3-vl-4b --json q3vl4b.json                     # a GPU
    python benchmarks/vlm_qlora.py --arch qwen3-vl-2b --quantization none --json q3vl2b-bf16.json

See benchmarks/README.md for what was measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from machine import Meter, cpu_name, load_text  # benchmarks/machine.py (this folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "prompts" / "golden"
GB = 1e9
GOAL_TRAIN_GB = 16.0  # peak GPU memory of one QLoRA training step (batch 1, the paper's prompt)
GOAL_WPS = 20.0  # scored windows per second with batching

# Qwen/Qwen2.5-VL-3B-Instruct's config.json as published (transformers 4.41-era flat layout, which
# Qwen2_5_VLConfig.from_dict still reads: the text fields at the top, rope_scaling -> rope_parameters).
# Checked against three public copies: a model-structure dump headed
# "# Qwen/Qwen2.5-VL-3B-Instruct" in the code search corpus (every field below); the fine-tune
# https://huggingface.co/dahwinsingularity/vllm2/blob/main/config.json (_name_or_path
# Qwen/Qwen2.5-VL-3B-Instruct; text fields and token ids identical); and a C++ test fixture "Selected
# Json config from Qwen2.5VL-3B" (vision_config and rope_scaling identical). It builds 3,754,622,976
# parameters (668,684,288 in the vision tower), the checkpoint's published size (~3.75 B).
QWEN25_VL_3B_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 128000,
    "max_window_layers": 70,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 16,
    "num_hidden_layers": 36,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 151936,
}
# Qwen2.5-VL's preprocessor_config.json pixel limits (min_pixels, max_pixels), as the Qwen2.5-VL
# checkpoints ship them (checked against public copies of the 3B's and 7B's preprocessor config).
QWEN25_VL_PIXELS = (3136, 12845056)

# --scale tiny: the same architecture, narrow and shallow, for a CPU (widths multiples of 64 for
# bitsandbytes; head_dim 128 as in the 3B so mrope_section [16, 24, 24] still fits).
TINY_TEXT = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "vocab_size": 2048}
TINY_VISION = {"depth": 2, "hidden_size": 128, "intermediate_size": 256, "num_heads": 2, "out_hidden_size": 256,
               "fullatt_block_indexes": [1]}

# Qwen/Qwen3-VL-2B-Instruct and Qwen/Qwen3-VL-4B-Instruct: the fields of their config.json that set
# the architecture, in the nested layout Qwen3VLConfig reads (rope_scaling -> rope_parameters).
# Cross-checked against public copies in the code search corpus (the 2B's text and vision fields,
# rope_theta and DeepStack indexes; the 4B's vision out_hidden_size and its text layout, Qwen3-4B's);
# not against the hub files themselves.
QWEN3_VL_VISION = {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "in_channels": 3,
                   "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                   "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17],
                   "hidden_act": "gelu_pytorch_tanh"}
QWEN3_VL_TEXT = {"vocab_size": 151936, "head_dim": 128, "hidden_act": "silu", "max_position_embeddings": 262144,
                 "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                                     "mrope_section": [24, 20, 20]}}


def qwen3_vl_config(hidden: int, intermediate: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "text_config": {**QWEN3_VL_TEXT, "hidden_size": hidden, "intermediate_size": intermediate,
                        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": 8},
        "vision_config": {**QWEN3_VL_VISION, "out_hidden_size": hidden},
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "tie_word_embeddings": True,
    }


# Qwen3-VL's preprocessor_config.json pixel limits (shortest_edge, longest_edge)
QWEN3_VL_PIXELS = (65536, 16777216)
# --scale tiny of Qwen3-VL: head_dim 128 kept, so mrope_section [24, 20, 20] still fits
QWEN3_TINY_TEXT = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "vocab_size": 2048}
QWEN3_TINY_VISION = {"depth": 2, "hidden_size": 128, "intermediate_size": 256, "num_heads": 2, "out_hidden_size": 256,
                     "deepstack_visual_indexes": [0], "num_position_embeddings": 256}


@dataclass(frozen=True)
class Arch:
    """One --arch: its published config, where the text fields sit (`nested`: under text_config), its
    --scale tiny overrides, the transformers classes, the tiny model whose tokenizer and processor it
    borrows (random:<tiny>) and the pixel limits of its preprocessor."""

    label: str
    config: dict[str, Any]
    nested: bool
    tiny_text: dict[str, Any]
    tiny_vision: dict[str, Any]
    config_class: str
    model_class: str
    tiny: str
    pixels: tuple[int, int]


ARCHS = {
    "qwen2.5-vl-3b": Arch("Qwen2.5-VL-3B-Instruct", QWEN25_VL_3B_CONFIG, False, TINY_TEXT, TINY_VISION,
                          "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "tiny", QWEN25_VL_PIXELS),
    "qwen3-vl-2b": Arch("Qwen3-VL-2B-Instruct", qwen3_vl_config(2048, 6144, 28, 16), True, QWEN3_TINY_TEXT,
                        QWEN3_TINY_VISION, "Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "tiny-qwen3-vl",
                        QWEN3_VL_PIXELS),
    "qwen3-vl-4b": Arch("Qwen3-VL-4B-Instruct", qwen3_vl_config(2560, 9728, 36, 32), True, QWEN3_TINY_TEXT,
                        QWEN3_TINY_VISION, "Qwen3VLConfig", "Qwen3VLForConditionalGeneration", "tiny-qwen3-vl",
                        QWEN3_VL_PIXELS),
}
SCALE_DEFAULTS = {
    "full": {"image_sizes": "1280x720,640x360", "batch_sizes": "1,8,16,32", "min_windows": 16, "rounds": 2},
    "tiny": {"image_sizes": "320x180", "batch_sizes": "1,2", "min_windows": 2, "rounds": 1},
}
PHASES = ("memory", "throughput", "tiny")
PRESETS = ("paper-baseline", "paper-enhanced")
PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                   "preprocessor_config.json", "video_preprocessor_config.json")

log = logging.getLogger("vlm_qlora")
T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", flush=True)


# ---------------------------------------------------------------- torchvision on a CPU-only torch


def ensure_torchvision(shim: bool) -> None:
    """Import torchvision (transformers' image processors need it); where its compiled operators do not
    load (a CUDA build of torchvision next to a CPU-only torch, as on the CI machine) stop, unless
    --cpu-nms-shim lets this run register the test suite's CPU NMS kernels."""
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        return
    except RuntimeError as e:
        if "torchvision::nms does not exist" not in str(e):
            raise
    if not shim:
        print("torchvision cannot load its compiled operators here (RuntimeError: operator torchvision::nms "
              "does not exist: a CUDA build of torchvision next to a CPU-only torch; see docs/INSTALL.md, "
              "'The torchvision trap').\nInstall a matching torchvision, or pass --cpu-nms-shim to register "
              "the CPU NMS kernels of tests/torchvision_cpu_ops.py for this run.")
        sys.exit(2)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.path.insert(0, str(ROOT / "tests"))
    import torchvision_cpu_ops

    torchvision_cpu_ops.install()
    print("note: --cpu-nms-shim: torchvision's CPU NMS kernels of tests/torchvision_cpu_ops.py are registered")


def fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


# ---------------------------------------------------------------- the model folder


def special_ids(tokenizer: Any) -> dict[str, int]:
    names = ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
             "<|vision_end|>", "<|vision_pad|>")
    vocab = tokenizer.get_vocab()
    return {n: vocab[n] for n in names if n in vocab}


def model_config_dict(args: argparse.Namespace, ids: dict[str, int]) -> dict[str, Any]:
    """The --arch's published config (or its --scale tiny version), with the tiny tokenizer's
    special-token ids."""
    arch = ARCHS[args.arch]
    d = copy.deepcopy(arch.config)
    text = d["text_config"] if arch.nested else d
    vision = d["vision_config"]
    if args.scale == "tiny":
        text.update(arch.tiny_text)
        vision.update(arch.tiny_vision)
    if args.layers:
        text["num_hidden_layers"] = args.layers
    if args.vision_depth:
        vision["depth"] = args.vision_depth
        for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if key in vision:
                vision[key] = [i for i in vision[key] if i < args.vision_depth] or [args.vision_depth - 1]
    text.update({
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    })
    d.update({
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    })
    d.pop("vision_token_id", None)  # <|vision_pad|>: the tiny tokenizer has none, and the model never reads it
    if max(ids.values()) >= text["vocab_size"]:
        raise SystemExit(f"vocab_size {text['vocab_size']} does not cover the tokenizer's ids (up to {max(ids.values())})")
    return d


def build_folder(args: argparse.Namespace, device: str, folder: Path) -> dict[str, Any]:
    """Write the random model (bf16 safetensors, built on `device`) and the processor into `folder`."""
    import torch
    import transformers
    from transformers import AutoProcessor, GenerationConfig

    from crashcast.risk.tiny_vlm import tiny_vlm_path

    arch = ARCHS[args.arch]
    tiny = tiny_vlm_path(name=arch.tiny)
    tok = AutoProcessor.from_pretrained(tiny).tokenizer
    ids = special_ids(tok)
    config = getattr(transformers, arch.config_class).from_dict(model_config_dict(args, ids))
    model_class = getattr(transformers, arch.model_class)
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = model_class._from_config(config, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"], do_sample=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    init_s = time.perf_counter() - t
    n_params = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    t = time.perf_counter()
    model.save_pretrained(folder)
    save_s = time.perf_counter() - t
    del model
    # the tiny model's tokenizer, chat template and processor, with the architecture's pixel limits
    for name in PROCESSOR_FILES:
        if (tiny / name).exists():
            shutil.copy(tiny / name, folder / name)
    pc_path = folder / "processor_config.json"
    pc = json.loads(pc_path.read_text())
    lo, hi = arch.pixels
    for key in ("image_processor", "video_processor"):
        if key in pc:
            pc[key]["size"] = {"shortest_edge": lo, "longest_edge": hi}
    pc_path.write_text(json.dumps(pc, indent=2))
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    tc, vc = config.text_config, config.vision_config
    return {"params": n_params, "vision_params": n_vision, "init_s": init_s, "save_s": save_s,
            "safetensors_gb": size / GB, "special_ids": ids, "text_layers": tc.num_hidden_layers,
            "text_hidden": tc.hidden_size, "vision_depth": vc.depth, "vision_hidden": vc.hidden_size,
            "vocab_size": tc.vocab_size, "tiny_processor": str(tiny), "arch": arch.label}


def vlm_overrides(args: argparse.Namespace) -> list[str]:
    """The --quantization and --compute-dtype settings as `vlm.*` overrides (none: the preset's)."""
    out = [f"vlm.quantization={args.quantization}"]
    if args.compute_dtype:
        out.append(f"vlm.compute_dtype={args.compute_dtype}")
    return out


# ---------------------------------------------------------------- prompts


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def write_window(workdir: Path, size: str, seed: int) -> Path:
    """A window folder: the golden window_meta.json and three synthetic dashcam keyframes at `size`
    (t = -3, -1.5, 0 s of a positive scenario)."""
    import numpy as np
    from PIL import Image

    from crashcast.data.synthetic import Renderer, SynthConfig, clip_rng, make_scenario, scenario_for

    folder = workdir / "windows" / size / "00822" / "mid"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(GOLDEN / "window_meta.json", folder / "window_meta.json")
    w, h = parse_size(size)
    fps = 30.0
    cfg = SynthConfig(width=w, height=h, fps=fps)
    rng = clip_rng(seed, 0)
    scenario = make_scenario(scenario_for(0), rng, cfg)
    renderer = Renderer(cfg, rng)
    s_ego = np.concatenate([[0.0], np.cumsum(scenario.ego_speed[:-1] / fps)])
    last = min(len(scenario.ego_speed) - 1, 180)
    for k, frame in enumerate((last - 90, last - 45, last)):
        rgb = renderer.frame(scenario, frame, float(s_ego[frame]))[0]
        Image.fromarray(rgb).save(folder / f"kf{k}.png")
    return folder


def text_tokens(processor: Any, prompt: Any) -> int:
    """Tokens of the training sequence other than the image pads: system turn, user text, answer,
    the chat template's markers and the vision start/end tokens."""
    from crashcast.risk.vlm import chat_texts

    text = chat_texts(processor, [prompt], answers=True)[0]
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return len(ids) - ids.count(pad)


def qwen_pretokens(processor: Any, prompt: Any) -> int | None:
    """Chunks of Qwen2's pre-tokenizer regex over the same text: each becomes at least one token of
    Qwen's own tokenizer (digits one by one), so this is a lower bound for Qwen's count."""
    try:
        import regex
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    except ImportError:
        return None
    from crashcast.risk.vlm import chat_texts

    text = chat_texts(processor, [prompt], answers=True)[0]
    specials = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
    pieces = regex.split("(" + "|".join(regex.escape(s) for s in specials) + ")", text)
    n = sum(1 if piece in specials else len(regex.findall(PRETOKENIZE_REGEX, piece)) for piece in pieces)
    return n - text.count("<|image_pad|>")  # the image pads are counted apart


def pad_prompt(prompt: Any, processor: Any, target: int) -> tuple[Any, int, int]:
    """`prompt` with table rows appended to its text until the training sequence has `target`
    non-image tokens (none added when it already has that many): (prompt, natural count, count)."""
    natural = text_tokens(processor, prompt)
    need = target - natural
    if need <= 0:
        return prompt, natural, natural
    tok = processor.tokenizer
    rows = [line for line in prompt.text.splitlines() if len(line) > 1 and line[1] == "|"] or [prompt.text]
    unit = "\n" + "\n".join(rows)
    ids = tok.encode(unit * (need // max(1, len(tok.encode(unit, add_special_tokens=False))) + 3),
                     add_special_tokens=False)
    padded, got = prompt, natural
    for _ in range(6):
        padded = replace(prompt, text=prompt.text + tok.decode(ids[:max(0, need)]))
        got = text_tokens(processor, padded)
        if got == target:
            break
        need += target - got
    return padded, natural, got


def variants(prompt: Any, n: int) -> list[Any]:
    """n copies of `prompt` with their own ids, alternating positive (target ~0.9) and negative (~0.1)."""
    from crashcast.prompts.builder import load_template

    answer = load_template(prompt.template).text["answer"]
    out = []
    for i in range(n):
        positive = i % 2 == 0
        target = (0.9 if positive else 0.1) - 0.01 * (i % 7)
        out.append(replace(prompt, id=f"{prompt.id}_{i}", label=int(positive), soft_target=target,
                           assistant=answer.format(probability=target)))
    return out


def make_prompts(args: argparse.Namespace, folder: Path, workdir: Path) -> dict[str, dict[str, Any]]:
    """Per image size: the padded paper prompt and its sequence statistics under the folder's processor."""
    from crashcast.config import load_config
    from crashcast.features.window_meta import read_window_meta
    from crashcast.prompts.builder import build_prompt
    from crashcast.risk.finetune import VlmCollator
    from crashcast.risk.vlm import load_processor

    cfg = load_config("paper-baseline", [f"vlm.base_model={folder}"]).vlm
    processor = load_processor(cfg, str(folder), padding_side="right")
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    out = {}
    for size in args.image_sizes:
        wdir = write_window(workdir, size, args.seed)
        base = build_prompt(read_window_meta(wdir / "window_meta.json"), wdir)
        prompt, natural, padded = pad_prompt(base, processor, args.text_tokens)
        batch = VlmCollator(processor)([prompt])
        ids = batch["input_ids"][0]
        grid = batch["image_grid_thw"].tolist()
        out[size] = {
            "prompt": prompt, "image_size": size, "seq_len": int(ids.shape[0]),
            "image_tokens": int((ids == pad_id).sum()), "text_tokens": padded, "text_tokens_natural": natural,
            "qwen_pretokens_natural": qwen_pretokens(processor, base),
            "answer_tokens": int((batch["labels"][0] != -100).sum()),
            "image_grid_thw": grid, "patches": int(batch["pixel_values"].shape[0]),
        }
    return out


# ---------------------------------------------------------------- phase 1: one training step


def count_4bit(model: Any) -> dict[str, int]:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return {"language_model": 0, "visual": 0}
    n = {"language_model": 0, "visual": 0}
    for name, m in model.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            n["visual" if ".visual." in f".{name}." else "language_model"] += 1
    return n


def memory_phase(preset: str, folder: Path, prompts: dict[str, dict[str, Any]], args: argparse.Namespace,
                 meter: Meter, workdir: Path, adapter_dir: Path | None, deadline: float) -> dict[str, Any]:
    from crashcast.config import load_config
    from crashcast.risk.finetune import make_trainer, prepare_model

    # one optimizer step over one prompt: the presets' batch of 1, no accumulation (accumulating the
    # paper's 16 micro-batches adds into the same gradient buffers: the same peak, 16x the time)
    cfg = load_config(preset, [f"vlm.base_model={folder}", "vlm.epochs=1", "vlm.gradient_accumulation=1",
                               f"vlm.seed={args.seed}", *vlm_overrides(args)]).vlm
    meter.free()
    meter.reset()
    t = time.perf_counter()
    model, processor, dev = prepare_model(cfg, args.device)
    meter.sync()
    load_s = time.perf_counter() - t
    res: dict[str, Any] = {"preset": preset, "device": dev, "load_s": load_s, "after_load": meter.now(),
                           "load_peak": meter.peak(), "linear4bit": count_4bit(model),
                           "compute_dtype": cfg.compute_dtype, "quantization": cfg.quantization,
                           "lora": cfg.lora.model_dump(),
                           "mse_weight": cfg.mse_weight, "steps": []}
    trainable, total = model.get_nb_trainable_parameters()
    res.update(trainable_params=trainable, total_params=total,
               attn_implementation=getattr(model.config, "_attn_implementation", None))
    mem = (f"{fmt(res['after_load']['allocated_gb'])} GB allocated" if meter.cuda
           else f"RSS {fmt(res['after_load']['rss_gb'])} GB")
    say(f"{preset}: loaded in {load_s:.1f} s on {dev}; {mem}; "
        f"Linear4bit layers {res['linear4bit']}; LoRA {trainable:,} trainable of {total:,}")
    if cfg.quantization == "nf4" and not any(res["linear4bit"].values()):
        say(f"WARNING: {preset}: the model is NOT in 4-bit (bitsandbytes missing?): these are not NF4 figures")
    for size, p in prompts.items():
        if time.perf_counter() > deadline:
            say(f"{preset} {size}: skipped, over --time-budget")
            continue
        trainer = make_trainer(model, processor, [p["prompt"]], [], cfg, workdir / "train" / f"{preset}-{size}", dev)
        meter.free()
        meter.reset()
        t = time.perf_counter()
        trainer.train()
        meter.sync()
        secs = time.perf_counter() - t
        peak = meter.peak()
        logs = next((h for h in trainer.state.log_history if "loss" in h), {})
        step = {"image_size": size, "seq_len": p["seq_len"], "image_tokens": p["image_tokens"],
                "text_tokens": p["text_tokens"], "train_s": secs, "optimizer_steps": trainer.state.global_step,
                **peak, "loss": logs.get("loss"), "ce": logs.get("ce"), "mse": logs.get("mse"),
                "grad_norm": logs.get("grad_norm"),
                # fp16's loss scaler skips the optimizer step when the gradients overflow: then the
                # AdamW states (2 x 4 bytes per LoRA parameter, a few MB) are missing from the peak
                "optimizer_step_skipped": getattr(trainer.optimizer, "step_was_skipped", None)}
        res["steps"].append(step)
        say(f"{preset} {size}: {p['seq_len']} tokens ({p['image_tokens']} image); step {secs:.2f} s; peak "
            f"allocated {fmt(peak['peak_allocated_gb'])} GB, reserved {fmt(peak['peak_reserved_gb'])} GB, "
            f"RSS {fmt(peak['peak_rss_gb'])} GB; loss {fmt(step['loss'], '.4g')}, grad norm {fmt(step['grad_norm'], '.3g')}"
            f"{'; the optimizer step was SKIPPED (fp16 overflow)' if step['optimizer_step_skipped'] else ''}")
        del trainer
        meter.free()
    if adapter_dir is not None:
        model.save_pretrained(str(adapter_dir), safe_serialization=True)
    del model, processor
    meter.free()
    return res


# ---------------------------------------------------------------- phase 2: scoring throughput


class ScoreTimer:
    """Wraps a RiskVlm's batch encoding and forced reading to time them (CUDA synchronised)."""

    def __init__(self, scorer: Any, meter: Meter) -> None:
        self.meter = meter
        self.reset()
        inputs, forced = scorer._inputs, scorer._forced

        def timed_inputs(prompts: Any, suffix: str) -> Any:
            t = time.perf_counter()
            out = inputs(prompts, suffix)
            meter.sync()
            if not suffix:
                self.prep_s += time.perf_counter() - t
                self.seq_lens.append(int(out["input_ids"].shape[1]))
            return out

        def timed_forced(prompts: Any) -> Any:
            meter.sync()
            t = time.perf_counter()
            out = forced(prompts)
            meter.sync()
            self.forced_s += time.perf_counter() - t
            return out

        scorer._inputs, scorer._forced = timed_inputs, timed_forced

    def reset(self) -> None:
        self.prep_s = 0.0
        self.forced_s = 0.0
        self.seq_lens: list[int] = []


def throughput_phase(folder: Path, adapter_dir: Path | None, prompts: dict[str, dict[str, Any]],
                     args: argparse.Namespace, meter: Meter, deadline: float) -> dict[str, Any]:
    from crashcast.config import load_config
    from crashcast.risk.vlm import load_vlm

    cfg = load_config("paper-enhanced", [f"vlm.base_model={folder}", *vlm_overrides(args)]).vlm
    adapter = adapter_dir if adapter_dir is not None and (adapter_dir / "adapter_config.json").exists() else None
    meter.free()
    t = time.perf_counter()
    scorer = load_vlm(cfg, adapter=adapter, device=args.device)
    meter.sync()
    res: dict[str, Any] = {"load_s": time.perf_counter() - t, "adapter": "paper-enhanced LoRA (q/k/v/o)" if adapter
                           else "none (zero-shot: the memory phase did not run)", "after_load": meter.now(),
                           "max_new_tokens": cfg.max_new_tokens, "rows": []}
    timer = ScoreTimer(scorer, meter)
    say(f"scorer loaded in {res['load_s']:.1f} s, adapter: {res['adapter']}; max_new_tokens {cfg.max_new_tokens}")
    for size in args.score_sizes:
        base = prompts[size]["prompt"]
        for bs in args.batch_sizes:
            if time.perf_counter() > deadline:
                say(f"score {size} batch {bs}: skipped, over --time-budget")
                continue
            n = max(args.rounds * bs, args.min_windows)
            windows = variants(base, n + bs)
            scorer.score(windows[:bs], batch_size=bs)  # warm-up: one batch of this shape
            timer.reset()
            meter.reset()
            t = time.perf_counter()
            scored = scorer.score(windows[bs:], batch_size=bs)
            meter.sync()
            secs = time.perf_counter() - t
            peak = meter.peak()
            gen_s = secs - timer.forced_s
            row = {"image_size": size, "batch_size": bs, "windows": n, "seconds": secs, "windows_per_s": n / secs,
                   "windows_per_s_without_forced": n / gen_s if gen_s > 0 else None,
                   "prep_ms_per_window": 1000 * timer.prep_s / n, "forced_share": timer.forced_s / secs,
                   "seq_len": max(timer.seq_lens) if timer.seq_lens else None,
                   "generated": sum(s.source == "generated" for s in scored),
                   "forced": sum(s.source == "forced" for s in scored), **peak}
            res["rows"].append(row)
            say(f"score {size} batch {bs}: {n} windows in {secs:.2f} s = {row['windows_per_s']:.2f} windows/s "
                f"({fmt(row['windows_per_s_without_forced'])} without the forced pass; preprocessing "
                f"{row['prep_ms_per_window']:.1f} ms/window); peak allocated {fmt(peak['peak_allocated_gb'])} GB")
            meter.free()
    del scorer, timer
    meter.free()
    return res


# ---------------------------------------------------------------- phase 3: tiny model in bf16


def toy_prompts(folder: Path) -> tuple[list[Any], list[Any]]:
    """The test suite's toy problem: positives (target 0.9) a red scene with a close, closing object;
    negatives (0.1) a blue scene with a far, receding one; three 56x56 keyframes each."""
    import numpy as np
    from PIL import Image

    from crashcast.prompts.builder import Prompt

    folder.mkdir(parents=True, exist_ok=True)

    def png(name: str, rgb: tuple[int, int, int], k: int) -> Path:
        a = np.zeros((56, 56, 3), np.uint8)
        a[:] = rgb
        a[8 + 12 * k: 20 + 12 * k, 10:40] = 255
        path = folder / f"{name}{k}.png"
        Image.fromarray(a).save(path)
        return path

    red = tuple(png("red", (200, 40, 40), k) for k in range(3))
    blue = tuple(png("blue", (40, 40, 200), k) for k in range(3))

    def window(i: int, positive: bool) -> Prompt:
        target = 0.9 if positive else 0.1
        text = (f"Object A: car, {2 + 0.5 * i:.1f} m ahead, closing at 8 m/s." if positive
                else f"Object A: car, {30 + i:.1f} m ahead, moving away.")
        pid = f"{'p' if positive else 'n'}{i}"
        return Prompt(id=pid, images=red if positive else blue, text=text,
                      assistant=f"Collision Probability: {target:.3f}", template="toy", clip_id=pid, phase="mid",
                      horizon_s=0.0, label=int(positive), soft_target=target)

    return [window(i, i % 3 == 0) for i in range(9)], [window(20, True), window(21, False)]


def tiny_phase(args: argparse.Namespace, workdir: Path, deadline: float) -> list[dict[str, Any]]:
    from crashcast.config import load_config
    from crashcast.risk.finetune import downsample, train_vlm
    from crashcast.risk.vlm import load_trained

    train, val = toy_prompts(workdir / "toy")
    out = []
    for preset in PRESETS:
        if time.perf_counter() > deadline:
            say(f"tiny {preset}: skipped, over --time-budget")
            continue
        cfg = load_config(preset, [f"vlm.base_model=random:{ARCHS[args.arch].tiny}", "vlm.compute_dtype=bfloat16",
                                   f"vlm.quantization={args.quantization}",
                                   "vlm.learning_rate=2e-2", f"vlm.epochs={args.tiny_epochs}",
                                   "vlm.gradient_accumulation=1", "vlm.max_new_tokens=10"]).vlm
        t = time.perf_counter()
        result = train_vlm(train, val, cfg, workdir / "tiny" / preset, device=args.device)
        train_s = time.perf_counter() - t
        kept = downsample(train, cfg.negative_fraction, cfg.seed)
        scores = load_trained(workdir / "tiny" / preset, device=args.device).score([*train, *val], batch_size=4)
        pos = [s.probability for s, p in zip(scores, train, strict=False) if p.label == 1]
        neg = [s.probability for s, p in zip(scores, train, strict=False) if p.label == 0]
        losses = result.losses
        k = max(1, len(losses) // 10)
        row = {"preset": preset, "train_s": train_s, "n_train": len(kept), "steps": len(losses),
               "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
               "loss_median_first_10pct": statistics.median(losses[:k]) if losses else None,
               "loss_median_last_10pct": statistics.median(losses[-k:]) if losses else None,
               "all_finite": all(math.isfinite(x) for x in losses),
               "eval_loss_first": result.eval_losses[0] if result.eval_losses else None,
               "best_eval_loss": result.best_eval_loss,
               "mean_score_positive": statistics.mean(pos), "mean_score_negative": statistics.mean(neg),
               "separates": statistics.mean(pos) > statistics.mean(neg) + 0.5,
               "written_answers": sum(s.source == "generated" for s in scores), "scored": len(scores)}
        out.append(row)
        say(f"tiny {preset}: {len(losses)} steps in {train_s:.1f} s; loss {fmt(row['loss_first'], '.3f')} -> "
            f"{fmt(row['loss_last'], '.3f')} (medians {fmt(row['loss_median_first_10pct'], '.3f')} -> "
            f"{fmt(row['loss_median_last_10pct'], '.3f')}); scores positive {row['mean_score_positive']:.3f}, "
            f"negative {row['mean_score_negative']:.3f}: {'separate' if row['separates'] else 'DO NOT separate'}")
    return out


# ---------------------------------------------------------------- report


def table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        return (f"{device} = {torch.cuda.get_device_name(device)} ({props.total_memory / GB:.0f} GB), "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    return f"{device} ({cpu_name()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads), torch {torch.__version__}"






def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def report(summary: dict[str, Any], cuda: bool) -> None:
    print()
    print(f"=== crashcast VLM QLoRA benchmark: {summary['device']}")
    b = summary.get("build", {})
    if b:
        print(f"model: {b['arch']} architecture{' SCALED DOWN' if summary['scaled'] else ''}, "
              f"random weights: {b['params']:,} parameters ({b['vision_params']:,} vision); text {b['text_layers']} layers x "
              f"{b['text_hidden']}, vision {b['vision_depth']} blocks x {b['vision_hidden']}, vocabulary {b['vocab_size']:,}; "
              f"built in {b['init_s']:.1f} s, saved ({b['safetensors_gb']:.2f} GB) in {b['save_s']:.1f} s")
    for size, p in summary.get("prompts", {}).items():
        print(f"prompt {size}: {p['seq_len']} tokens = {p['image_tokens']} image tokens (3 keyframes, grids "
              f"{p['image_grid_thw']}) + {p['text_tokens']} other tokens (natural {p['text_tokens_natural']} with the "
              f"tiny tokenizer, Qwen pre-tokenizer chunks >= {p['qwen_pretokens_natural']}; padded to --text-tokens); "
              f"answer {p['answer_tokens']} tokens")
    mem = summary.get("memory", [])
    if mem:
        what = "NF4 + LoRA (QLoRA)" if summary["quantization"] == "nf4" else "LoRA on the unquantized base"
        print(f"\none training step (forward + backward + optimizer step, batch 1), {what}; memory in GB (10^9 B):")
        rows = []
        for m in mem:
            for s in m["steps"]:
                loss = fmt(s["loss"], ".4g") + ("" if not s.get("mse") else f" (ce {fmt(s['ce'], '.4g')}, mse {fmt(s['mse'], '.4g')})")
                rows.append([m["preset"], s["image_size"], str(s["seq_len"]), str(s["image_tokens"]),
                             f"{m['trainable_params']:,}",
                             fmt(m["after_load"]["allocated_gb"] if cuda else m["after_load"]["rss_gb"]),
                             fmt(m["load_peak"]["peak_allocated_gb"] if cuda else m["load_peak"]["peak_rss_gb"]),
                             fmt(s["peak_allocated_gb"]), fmt(s["peak_reserved_gb"]), fmt(s["peak_rss_gb"]),
                             f"{m['load_s']:.1f}", f"{s['train_s']:.2f}", loss])
        print(table(["preset", "image", "tokens", "img tok", "LoRA params", "loaded" if cuda else "loaded RSS",
                     "load peak", "peak alloc", "peak resv",
                     "peak RSS", "load s", "step s", "loss"], rows))
    thr = summary.get("throughput", {})
    if thr.get("rows"):
        print(f"\nscoring, RiskVlm.score (one generate per batch, max_new_tokens {thr['max_new_tokens']}), "
              f"adapter {thr['adapter']}:")
        rows = [[r["image_size"], str(r["batch_size"]), str(r["windows"]), str(r["seq_len"]), f"{r['seconds']:.2f}",
                 f"{r['windows_per_s']:.2f}", fmt(r["windows_per_s_without_forced"]), f"{r['prep_ms_per_window']:.1f}",
                 f"{100 * r['forced_share']:.0f}%", fmt(r["peak_allocated_gb"]), fmt(r["peak_reserved_gb"])]
                for r in thr["rows"]]
        print(table(["image", "batch", "windows", "tokens", "s", "windows/s", "w/s no forced", "prep ms/w",
                     "forced", "peak alloc", "peak resv"], rows))
    tiny = summary.get("tiny", [])
    if tiny:
        print(f"\ntiny model (random:{ARCHS[summary['arch']].tiny}), train_vlm, quantization {summary['quantization']}, "
              f"compute_dtype bfloat16{'' if cuda else ' (float32 here: crashcast computes in float32 on a CPU)'}:")
        rows = [[t["preset"], str(t["steps"]), f"{t['train_s']:.1f}", f"{fmt(t['loss_first'], '.3f')} -> {fmt(t['loss_last'], '.3f')}",
                 f"{fmt(t['loss_median_first_10pct'], '.3f')} -> {fmt(t['loss_median_last_10pct'], '.3f')}",
                 f"{t['mean_score_positive']:.3f} / {t['mean_score_negative']:.3f}", "yes" if t["separates"] else "NO",
                 "yes" if t["all_finite"] else "NO"] for t in tiny]
        print(table(["preset", "steps", "s", "loss first -> last", "median first -> last 10%", "score pos / neg",
                     "separate", "finite"], rows))
    print()
    for line in summary["verdicts"]:
        print(line)
    print("approximations: " + "; ".join(summary["approximations"]))
    print(f"phases (s): {json.dumps({k: round(v, 1) for k, v in summary['timings'].items()})}; "
          f"before: {summary['load_before']}; after: {summary['load_after']} (a shared machine's other jobs slow a CPU run)")


def verdicts(summary: dict[str, Any], cuda: bool) -> list[str]:
    out = []
    where = "" if cuda and not summary["scaled"] else " (NOT a GPU run of the full model: says nothing about the goal)"
    steps = [(m, s) for m in summary.get("memory", []) for s in m["steps"]]
    if steps:
        for m, s in steps:
            nf4 = ("" if m.get("quantization") != "nf4" or any(m["linear4bit"].values())
                   else " (NOT NF4: the model loaded unquantized; is bitsandbytes installed?)")
            v = s["peak_reserved_gb"] if cuda else s["peak_rss_gb"]
            what = "peak reserved GPU memory" if cuda else "peak RSS"
            ok = v is not None and v < GOAL_TRAIN_GB
            out.append(f"goal training step < {GOAL_TRAIN_GB:.0f} GB: {m['preset']} {s['image_size']} ({s['seq_len']} tokens): "
                       f"{what} {fmt(v)} GB: {'MET' if ok else 'NOT MET'}{nf4}{where}")
    rows = summary.get("throughput", {}).get("rows", [])
    for size in dict.fromkeys(r["image_size"] for r in rows):
        mine = [r for r in rows if r["image_size"] == size]
        best = max(mine, key=lambda r: r["windows_per_s"])
        best_nf = max(mine, key=lambda r: r["windows_per_s_without_forced"] or 0.0)
        nf = best_nf["windows_per_s_without_forced"]
        out.append(f"goal scoring >= {GOAL_WPS:.0f} windows/s: {size}: best {best['windows_per_s']:.2f} windows/s at "
                   f"batch {best['batch_size']} as run ({'MET' if best['windows_per_s'] >= GOAL_WPS else 'NOT MET'}); "
                   f"{fmt(nf)} at batch {best_nf['batch_size']} without the forced pass a random model needs "
                   f"({'MET' if nf and nf >= GOAL_WPS else 'NOT MET'}){where}")
    return out


def approximations(summary: dict[str, Any]) -> list[str]:
    out = ["random weights (memory and compute do not depend on their values)",
           "the tiny model's tokenizer (~1k tokens) with the published config's special-token ids remapped to its ids",
           "text padded with repeated table rows to --text-tokens non-image tokens",
           "synthetic dashcam keyframes (image token counts depend only on their size)",
           "one prompt, one optimizer step, no gradient accumulation (the same peak as the paper's 16)",
           "scoring: random weights never write the answer, so each window also takes the forced reading and "
           "every generate runs all max_new_tokens; a trained model stops after ~9 tokens"]
    if summary["scaled"]:
        out.insert(0, "SCALED-DOWN architecture (--scale tiny, --layers or --vision-depth)")
    return out


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default auto)")
    ap.add_argument("--arch", choices=tuple(ARCHS), default="qwen2.5-vl-3b",
                    help="the architecture (default qwen2.5-vl-3b, the paper's); qwen3-vl-2b, qwen3-vl-4b: Qwen3-VL-*-Instruct")
    ap.add_argument("--quantization", choices=("nf4", "none"), default="nf4",
                    help="nf4: QLoRA (the paper's, default); none: LoRA on the unquantized base in --compute-dtype")
    ap.add_argument("--compute-dtype", choices=("float16", "bfloat16", "float32"), default=None,
                    help="on CUDA (default: the preset's float16 with nf4, bfloat16 with none)")
    ap.add_argument("--scale", choices=("full", "tiny"), default=None,
                    help="full: the --arch's published architecture (default on CUDA); tiny: narrow and shallow (default on a CPU)")
    ap.add_argument("--layers", type=int, default=None, help="override the text layers (36 in the Qwen2.5-VL-3B)")
    ap.add_argument("--vision-depth", type=int, default=None, help="override the vision blocks (32 in the Qwen2.5-VL-3B)")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)} (default: all)")
    ap.add_argument("--tiny", action="store_true", help="only the tiny-model integration (same as --phases tiny)")
    ap.add_argument("--presets", default=",".join(PRESETS), help="presets of the memory phase (default: both)")
    ap.add_argument("--image-sizes", default=None,
                    help="keyframe sizes WxH, comma-separated (default 1280x720,640x360; tiny scale 320x180)")
    ap.add_argument("--score-sizes", default=None, help="image sizes to score (default: every --image-sizes)")
    ap.add_argument("--text-tokens", type=int, default=600,
                    help="pad the prompt to this many non-image tokens (0: the tiny tokenizer's own count)")
    ap.add_argument("--batch-sizes", default=None, help="scoring batch sizes (default 1,8,16,32; tiny scale 1,2)")
    ap.add_argument("--min-windows", type=int, default=None, help="windows scored per batch size, at least (default 16)")
    ap.add_argument("--rounds", type=int, default=None, help="timed batches per batch size, at least (default 2)")
    ap.add_argument("--tiny-epochs", type=int, default=10, help="epochs of the tiny-model integration (default 10)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds after which remaining steps are skipped (default 540 on CUDA, none on a CPU)")
    ap.add_argument("--workdir", default=None, help="folder for the model, prompts and adapters (default: a temporary one, removed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also write the summary to this file (rewritten after each phase)")
    ap.add_argument("--cpu-nms-shim", action="store_true", help="where torchvision's compiled operators do not load "
                    "(CUDA torchvision, CPU torch), register the test suite's CPU NMS kernels for this run")
    args = ap.parse_args()
    phases = ["tiny"] if args.tiny else [p for p in args.phases.replace(" ", "").split(",") if p]
    if bad := [p for p in phases if p not in PHASES]:
        ap.error(f"--phases: unknown {bad}; phases: {', '.join(PHASES)}")
    presets = [p for p in args.presets.split(",") if p]
    if args.quantization == "none" and args.compute_dtype is None:
        args.compute_dtype = "bfloat16"  # the bf16 LoRA mode

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    warnings.filterwarnings("ignore", message=".*(is_gradient_checkpointing|use_cache=True).*")
    ensure_torchvision(args.cpu_nms_shim)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" and "Writing model shards" bars

    from crashcast.runtime.context import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = device
    cuda = device.startswith("cuda")
    args.scale = args.scale or ("full" if cuda else "tiny")
    d = SCALE_DEFAULTS[args.scale]
    args.image_sizes = [s for s in (args.image_sizes or d["image_sizes"]).split(",") if s]
    args.score_sizes = [s for s in (args.score_sizes or ",".join(args.image_sizes)).split(",") if s]
    if missing := [s for s in args.score_sizes if s not in args.image_sizes]:
        ap.error(f"--score-sizes {missing} not among --image-sizes")
    args.batch_sizes = [int(b) for b in (args.batch_sizes or d["batch_sizes"]).split(",") if b]
    args.min_windows = args.min_windows or d["min_windows"]
    args.rounds = args.rounds or d["rounds"]
    budget = args.time_budget if args.time_budget is not None else (540.0 if cuda else 0.0)
    deadline = T0 + budget if budget > 0 else math.inf

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vlm-qlora-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CRASHCAST_CACHE_DIR", str(workdir / "cache"))  # where random:tiny is built
    meter = Meter(device, unit="GB")
    scaled = args.scale != "full" or bool(args.layers) or bool(args.vision_depth)
    summary: dict[str, Any] = {"benchmark": "vlm_qlora", "device": describe_device(device), "scale": args.scale,
                               "scaled": scaled, "arch": args.arch, "quantization": args.quantization,
                               "compute_dtype": args.compute_dtype,
                               "phases": phases, "versions": versions(), "goals": {"train_gb": GOAL_TRAIN_GB,
                               "windows_per_s": GOAL_WPS}, "text_tokens_target": args.text_tokens, "timings": {}}

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2, default=str))

    summary["load_before"] = load_text()
    say(f"device {summary['device']}; arch {args.arch}; quantization {args.quantization}; scale {args.scale}; phases {','.join(phases)}; workdir {workdir}; "
        f"versions {summary['versions']}; {summary['load_before']}")
    try:
        folder = workdir / "model"
        if {"memory", "throughput"} & set(phases):
            t = time.perf_counter()
            summary["build"] = build_folder(args, device, folder)
            summary["timings"]["build"] = time.perf_counter() - t
            b = summary["build"]
            say(f"model: {b['params']:,} parameters ({b['vision_params']:,} vision), built in {b['init_s']:.1f} s, "
                f"saved {b['safetensors_gb']:.2f} GB in {b['save_s']:.1f} s; special ids {b['special_ids']}")
            t = time.perf_counter()
            prompts = make_prompts(args, folder, workdir)
            summary["timings"]["prompts"] = time.perf_counter() - t
            summary["prompts"] = {k: {kk: vv for kk, vv in v.items() if kk != "prompt"} for k, v in prompts.items()}
            for size, p in summary["prompts"].items():
                say(f"prompt {size}: {p['seq_len']} tokens, {p['image_tokens']} image tokens, {p['text_tokens']} other "
                    f"(natural {p['text_tokens_natural']}; Qwen pre-tokenizer chunks >= {p['qwen_pretokens_natural']})")
            save()
        adapter_dir = workdir / "adapter-enhanced"
        if "memory" in phases:
            summary["memory"] = []
            for preset in presets:
                if time.perf_counter() > deadline:
                    say(f"memory {preset}: skipped, over --time-budget")
                    continue
                t = time.perf_counter()
                keep = adapter_dir if preset == "paper-enhanced" and "throughput" in phases else None
                summary["memory"].append(memory_phase(preset, folder, prompts, args, meter, workdir, keep, deadline))
                summary["timings"][f"memory {preset}"] = time.perf_counter() - t
                save()
        if "throughput" in phases:
            t = time.perf_counter()
            summary["throughput"] = throughput_phase(folder, adapter_dir, prompts, args, meter, deadline)
            summary["timings"]["throughput"] = time.perf_counter() - t
            save()
        if "tiny" in phases:
            t = time.perf_counter()
            summary["tiny"] = tiny_phase(args, workdir, deadline)
            summary["timings"]["tiny"] = time.perf_counter() - t
            save()
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    summary["timings"]["total"] = time.perf_counter() - T0
    summary["load_after"] = load_text()
    summary["verdicts"] = verdicts(summary, cuda)
    summary["approximations"] = approximations(summary)
    save()
    report(summary, cuda)
    print(json.dumps(summary, default=str, separators=(",", ":")))


if __name__ == "__main__":
    main()
