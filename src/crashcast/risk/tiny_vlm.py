"""Tiny, randomly initialised vision-language models on disk, for tests and dry runs with no downloads.

Two architectures, each its real transformers class with random weights (`TINY_MODELS`):
- `random:tiny`: Qwen2.5-VL (`build_tiny_vlm`), the paper's architecture;
- `random:tiny-qwen3-vl`: Qwen3-VL (`build_tiny_qwen3_vl`: patch 16, DeepStack visual features fed
  into the first text layer, q/k RMS norms, interleaved M-RoPE, tied embeddings like the 2B and 4B).

`build_tiny_vlm(folder)` writes what `from_pretrained(folder)` reads for the real
`Qwen/Qwen2.5-VL-3B-Instruct`: the model config and weights, a byte-level BPE tokenizer, the chat
template with image placeholders, the image processor and the generation config. Everything is
small (two text layers of width 128, a two-block vision tower of width 64, a vocabulary of ~1k
tokens, images of at most 112 x 112 pixels) so a 4-bit NF4 QLoRA step runs on a CPU in a fraction
of a second. `build_tiny_qwen3_vl(folder)` does the same for `Qwen/Qwen3-VL-2B-Instruct`'s layout
with the same tokenizer and sizes (images of at most 128 x 128 pixels: Qwen3-VL's patches are 16
pixels, so a merged token covers 32 x 32).

Why these choices:
- Widths are multiples of 64: bitsandbytes' 4-bit layers crash on narrower inputs
  (seen with bitsandbytes 0.45-0.50 on CPU), and the model must load in NF4 like the real one.
- The tokenizer is transformers' own `Qwen2Tokenizer` over merges learnt here from the prompt
  template's wording, so it pre-tokenizes like Qwen's (one token per digit, which the
  expected-digit reading needs) and prompts stay a few hundred tokens long.
- The chat template is Qwen2-VL's: `<|vision_start|><|image_pad|><|vision_end|>` per image entry.
  Qwen3-VL's Instruct template writes the same turns without the default system turn
  (`QWEN3_CHAT_TEMPLATE`, written here in that form).

`vlm.base_model: random:tiny` resolves to `tiny_vlm_path()` (`random:tiny-qwen3-vl` to
`tiny_vlm_path(name="tiny-qwen3-vl")`): a build cached under the user's cache folder and keyed by
the architecture's version and a hash of the tokenizer's corpus (the packaged prompt template), so a
change to either makes a new folder instead of reusing an old one. The builds are deterministic
(fixed seed, fixed corpus).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

TINY_VLM_VERSION = "1"
"""Bump when anything below changes what the Qwen2.5-VL build writes (the cache folder is keyed by it)."""
TINY_QWEN3_VL_VERSION = "1"
"""The same for the Qwen3-VL build."""
TINY_NAME = "tiny"
TINY_QWEN3_VL_NAME = "tiny-qwen3-vl"
SEED = 1234
CACHE_ENV = "CRASHCAST_CACHE_DIR"

TEXT_HIDDEN = 128
VISION_HIDDEN = 64
VOCAB_SIZE = 1024
MAX_PIXELS = 112 * 112
TEXT_INIT_STD = 0.1
MIN_PIXELS = 56 * 56
QWEN3_MIN_PIXELS = 64 * 64  # Qwen3-VL: 16-pixel patches merged 2 x 2, so sides are multiples of 32
QWEN3_MAX_PIXELS = 128 * 128

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2-VL's chat template (the one Qwen2.5-VL-*-Instruct ships): a default system turn, one
# vision block per image or video entry, text entries verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Qwen3-VL-*-Instruct's turns: a system turn only when the messages start with one (no default),
# then the same ChatML turns and vision blocks as Qwen2-VL's.
QWEN3_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyModel:
    """One tiny architecture: `random:<name>`, the cache folder's stem, its build version and builder."""

    name: str
    stem: str
    version: str
    build: Callable[[Path], Path]
    architecture: str


def tiny_models() -> dict[str, TinyModel]:
    """name (what follows `random:`) -> the tiny architecture it builds."""
    return {
        TINY_NAME: TinyModel(TINY_NAME, "tiny-qwen2.5-vl", TINY_VLM_VERSION, build_tiny_vlm, "Qwen2.5-VL"),
        TINY_QWEN3_VL_NAME: TinyModel(TINY_QWEN3_VL_NAME, "tiny-qwen3-vl", TINY_QWEN3_VL_VERSION,
                                      build_tiny_qwen3_vl, "Qwen3-VL"),
    }


def tiny_name(base_model: str) -> str | None:
    """`random:tiny` -> 'tiny', `random:tiny-qwen3-vl` -> 'tiny-qwen3-vl'; None for anything else."""
    from crashcast.runtime.weights import RANDOM_PREFIX

    if base_model.startswith(RANDOM_PREFIX) and base_model[len(RANDOM_PREFIX):] in tiny_models():
        return base_model[len(RANDOM_PREFIX):]
    return None


def cache_root() -> Path:
    """$CRASHCAST_CACHE_DIR, else $XDG_CACHE_HOME/crashcast, else ~/.cache/crashcast."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "crashcast"


def tiny_vlm_path(root: Path | None = None, name: str = TINY_NAME) -> Path:
    """The cached tiny model's folder (`name`: a key of `tiny_models()`), built on first use.
    Concurrent first uses each build into a temporary folder and the first rename wins, so no reader
    ever sees a half-written folder."""
    tiny = tiny_models()[name]
    root = Path(root) if root is not None else cache_root()
    corpus = hashlib.sha256("\0".join(_corpus()).encode()).hexdigest()[:8]
    folder = root / f"{tiny.stem}-v{tiny.version}-{corpus}"
    if (folder / "config.json").exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-vlm-", dir=root))
    try:
        tiny.build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("built the tiny random %s in %s", tiny.architecture, folder)
    return folder


def _corpus() -> list[str]:
    """What the tokenizer's merges are learnt from: the prompt template's wording and the answer
    format, so a real prompt tokenizes into words rather than bytes."""
    text = (resources.files("crashcast.prompts") / "templates" / "risk_v1.yaml").read_text(encoding="utf-8")
    extra = [
        "Collision Probability: 0.872\nReason: car A, 12.5 m ahead, closing at 3.0 m/s, TTC 4.2 s.",
        "You are a helpful assistant.",
        "system\nuser\nassistant\n",
    ]
    return [text, *extra]


def build_tokenizer(folder: Path, chat_template: str = CHAT_TEMPLATE):
    """A `Qwen2Tokenizer` (the real one's class, pre-tokenizer and decoder; Qwen3-VL ships the same
    class) over byte-level BPE merges learnt from `_corpus()`, with Qwen's special tokens and
    `chat_template`; saved into `folder` and returned."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    # in rank order; older tokenizers releases write a merge as "a b", newer ones as ["a", "b"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(tok.to_str())["model"]["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=tok.get_vocab(),
        merges=merges,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        errors="replace",
        model_max_length=32768,
    )
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_vlm(folder: Path) -> Path:
    """Write the tiny random Qwen2.5-VL (model, tokenizer, processor, generation config) into
    `folder`; returns it. Deterministic: the same files every time for one TINY_VLM_VERSION."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = 64
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": max(VOCAB_SIZE, len(tokenizer)),  # padded like Qwen's (151936 > its tokenizer)
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 2 * TEXT_HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": TEXT_HIDDEN // head_dim,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "initializer_range": TEXT_INIT_STD,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                                "mrope_section": [8, 12, 12]},  # sums to head_dim / 2
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 2 * VISION_HIDDEN,
            "num_heads": 1,
            "out_hidden_size": TEXT_HIDDEN,
            "fullatt_block_indexes": [1],
            "window_size": 56,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    _save_random(Qwen2_5_VLForConditionalGeneration, config, ids, folder)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=_video_processor(), chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder


def build_tiny_qwen3_vl(folder: Path) -> Path:
    """Write the tiny random Qwen3-VL (model, tokenizer, processor, generation config) into `folder`;
    returns it. The layout of `Qwen/Qwen3-VL-2B-Instruct` (DeepStack, q/k norms, interleaved M-RoPE,
    tied embeddings, 16-pixel patches, a learnt position embedding in the vision tower) at the tiny
    sizes of `build_tiny_vlm`. Deterministic: the same files every time for one TINY_QWEN3_VL_VERSION."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder, QWEN3_CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = 64
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": max(VOCAB_SIZE, len(tokenizer)),
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 2 * TEXT_HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": TEXT_HIDDEN // head_dim,
            "num_key_value_heads": 1,
            "head_dim": head_dim,
            "max_position_embeddings": 4096,
            "initializer_range": TEXT_INIT_STD,
            # interleaved M-RoPE over head_dim / 2 = 32 frequencies (the 2B: [24, 20, 20] of 64)
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_interleaved": True,
                                "mrope_section": [12, 10, 10]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": VISION_HIDDEN,
            "intermediate_size": 2 * VISION_HIDDEN,
            "num_heads": 1,
            "out_hidden_size": TEXT_HIDDEN,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,  # an 8 x 8 grid, interpolated to each image's (the 2B: 48 x 48)
            "deepstack_visual_indexes": [0],  # block 0's features join the first text layer
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    _save_random(Qwen3VLForConditionalGeneration, config, ids, folder)
    image_processor = Qwen2VLImageProcessor(
        min_pixels=QWEN3_MIN_PIXELS, max_pixels=QWEN3_MAX_PIXELS, patch_size=16, temporal_patch_size=2,
        merge_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    video = _video_processor("Qwen3VLVideoProcessor", size={"shortest_edge": QWEN3_MIN_PIXELS,
                                                            "longest_edge": QWEN3_MAX_PIXELS})
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video,
                                 chat_template=QWEN3_CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder


def _save_random(model_class: type, config: object, ids: dict[str, int], folder: Path) -> None:
    """`model_class(config)` with weights drawn from `SEED` (the caller's random state untouched),
    greedy generation ending at `<|im_end|>`, saved into `folder`."""
    import torch
    from transformers import GenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(folder)


def _video_processor(name: str = "Qwen2VLVideoProcessor", **sizes: object):
    """transformers' video processor `name` with the tiny sizes (default Qwen2-VL's), or None where it
    cannot be built (it needs torchvision); crashcast sends no videos, and the processor works
    without one."""
    try:
        import transformers

        return getattr(transformers, name)(**(sizes or {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}))
    except Exception as e:  # torchvision missing or broken: images only
        log.debug("no video processor for the tiny model: %s", e)
        return None
