"""Grounding DINO open-vocabulary detection through transformers (the paper's second detector: it
recovers what YOLO misses).

The query is a list of phrases ended by full stops ("car. truck. bus. motorcycle. bicycle. person.").
The model scores every box against every query token; a box is kept when its best token probability
exceeds `box_threshold` (transformers' `post_process_grounded_object_detection` rule), and is named by
the query phrase whose tokens score highest, if that phrase's best token exceeds `text_threshold`
(a box that matches only the delimiters has no phrase and is dropped). transformers' own post-processing
instead joins every token above the text threshold into one label ("car truck"), which no class table
can map; picking one phrase keeps the label one of the words asked for. The phrase then becomes a
coarse class through `labels.coarse_class`. No class filter: the query says what to look for.

Frames go through the processor as a list with the same query per frame, one forward pass per batch;
boxes come back in each frame's own pixels.

`weights: random:tiny` builds a tiny random model (Swin with embed_dim 8, a 1-layer BERT of width 32,
decoder_layers 2, 30 queries), a WordPiece tokenizer made in memory from the query's words (BERT's
special-token ids, which the model hard-codes: [CLS] 101, [SEP] 102, "." 1012, "?" 1029) and a
processor resizing to a shortest edge of 128: it runs offline on a CPU. `random:grounding-dino-tiny`
is the full-size tiny architecture with random weights, for speed benchmarks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from crashcast.errors import ConfigError
from crashcast.perception.base import FrameContext
from crashcast.perception.models._common import check_rgb_frames, load_pretrained
from crashcast.perception.models.labels import coarse_class
from crashcast.perception.spec import BuildContext, backend
from crashcast.runtime.weights import WeightFile, is_random
from crashcast.settings import BackendConfig
from crashcast.types import Detections

log = logging.getLogger(__name__)

SOURCE = "grounding-dino"
DEFAULT_QUERY = "car. truck. bus. motorcycle. bicycle. person."
#: hub repositories: approximate size (MB) of model.safetensors plus the small config/tokenizer files
CHECKPOINTS_MB: dict[str, float] = {
    "IDEA-Research/grounding-dino-tiny": 690.0,
    "IDEA-Research/grounding-dino-base": 934.0,
}
HUB_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
#: BERT's ids of its special tokens; Grounding DINO hard-codes [CLS], [SEP], "." and "?" as phrase
#: delimiters (transformers' SPECIAL_TOKENS), so a tokenizer made here must use the same ids
BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}
RANDOM_ARCHS = ("tiny", "grounding-dino-tiny")
RANDOM_SEED = 0


class GroundingDinoConfig(BackendConfig):
    """Grounding DINO's settings."""

    name: str = "grounding-dino"
    weights: str = Field(
        "IDEA-Research/grounding-dino-tiny",
        description="a hub id (IDEA-Research/grounding-dino-tiny "
        "or -base), a local folder, or random:tiny / random:grounding-dino-tiny",
    )
    query: str = Field(DEFAULT_QUERY, description="phrases to detect, each ended by a full stop (lower case)")
    box_threshold: float = Field(
        0.35,
        ge=0,
        le=1,
        description="keep a box whose best token probability exceeds this "
        "(0.35 and 0.25 are the Grounding DINO authors' demo values)",
    )
    text_threshold: float = Field(0.25, ge=0, le=1, description="a box's phrase must have a token above this")
    shortest_edge: int | None = Field(
        None,
        ge=32,
        le=8192,
        description="resize frames so their short side has this many "
        "pixels (None: the checkpoint's setting, 800)",
    )
    longest_edge: int | None = Field(
        None, ge=32, le=8192, description="... and the long side at most this many (None: 1333)"
    )

    @field_validator("query")
    @classmethod
    def _phrases(cls, v: str) -> str:
        if not phrases_of(v):
            raise ValueError(f"the query needs at least one phrase, e.g. {DEFAULT_QUERY!r}; got {v!r}")
        return v


def phrases_of(query: str) -> list[str]:
    """The query's phrases ("car. truck." -> ["car", "truck"])."""
    return [p.strip() for p in query.lower().split(".") if p.strip()]


def token_phrases(input_ids: Sequence[int], delimiter_ids: set[int]) -> np.ndarray:
    """(T,) int: the phrase index of each token, -1 for delimiters ([CLS], [SEP], [PAD], ".", "?"); a
    phrase is a run of tokens between delimiters, as the model's own text attention mask splits them."""
    out = np.full(len(input_ids), -1, dtype=np.int64)
    phrase, inside = -1, False
    for i, t in enumerate(input_ids):
        if int(t) in delimiter_ids:
            inside = False
            continue
        if not inside:
            phrase, inside = phrase + 1, True
        out[i] = phrase
    return out


def ground(
    probs: np.ndarray,
    boxes_cxcywh: np.ndarray,
    token_phrase: np.ndarray,
    size_hw: tuple[int, int],
    box_threshold: float,
    text_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of one image from the model's outputs (see the module docstring for the rule).

    probs: (Q, T) token probabilities (sigmoid of the logits over the query's T tokens); boxes_cxcywh:
    (Q, 4) centre/size in [0, 1] of the image; token_phrase: (T,) from `token_phrases`; size_hw: the
    image's (height, width). Returns xyxy (n, 4) float32 pixels clipped to the image, confidence (n,)
    and phrase index (n,), highest confidence first."""
    n_phrases = int(token_phrase.max()) + 1 if len(token_phrase) else 0
    if probs.size == 0 or n_phrases == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    score = probs.max(axis=1)
    phrase_prob = np.stack(
        [probs[:, token_phrase == p].max(axis=1) for p in range(n_phrases)], axis=1
    )  # (Q, P)
    phrase = phrase_prob.argmax(axis=1)
    keep = (score > box_threshold) & (phrase_prob.max(axis=1) > text_threshold)
    order = np.flatnonzero(keep)[np.argsort(-score[keep], kind="stable")]
    h, w = size_hw
    cx, cy, bw, bh = boxes_cxcywh[order].astype(np.float64).T
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1) * np.array([w, h, w, h])
    xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
    return xyxy.reshape(-1, 4), score[order].astype(np.float32), phrase[order].astype(np.int64)


class GroundingDinoDetector:
    """`Detector` running Grounding DINO with one text query on batches of RGB frames."""

    name = "grounding-dino"

    def __init__(self, cfg: GroundingDinoConfig, ctx: BuildContext) -> None:
        self.cfg = cfg
        self.device = ctx.device
        self.dtype = ctx.dtype
        self.model, self.processor = _load(cfg, ctx)
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self.query = " ".join(f"{p}." for p in phrases_of(cfg.query))
        tok = self.processor.tokenizer
        ids = tok(self.query)["input_ids"]
        max_len = self.model.config.max_text_len
        if len(ids) > max_len:
            raise ConfigError(
                f"perception.detector.query: {len(ids)} tokens, more than the model's {max_len}"
            )
        special = set(BERT_SPECIAL_IDS.values()) | {
            i for i in (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id) if i is not None
        }
        self.token_phrase = token_phrases(ids, special)
        n = int(self.token_phrase.max()) + 1
        self.phrases = [
            tok.decode([t for t, p in zip(ids, self.token_phrase, strict=True) if p == k]).strip()
            for k in range(n)
        ]
        self.classes = np.array([coarse_class(p) for p in self.phrases], dtype=object)
        log.debug("grounding-dino phrases %s -> %s", self.phrases, list(self.classes))

    def detect(
        self, frames: Sequence[np.ndarray], contexts: Sequence[FrameContext] | None = None
    ) -> list[Detections]:
        """Boxes per frame (one forward pass for the batch)."""
        import torch

        if len(frames) == 0:
            return []
        check_rgb_frames(frames, self.name)
        inputs = self.processor(images=list(frames), text=[self.query] * len(frames), return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model(**inputs)
        t = len(self.token_phrase)
        probs = out.logits[..., :t].float().sigmoid().cpu().numpy()
        boxes = out.pred_boxes.float().cpu().numpy()
        result = []
        for f, p, b in zip(frames, probs, boxes, strict=True):
            xyxy, conf, phrase = ground(
                p, b, self.token_phrase, f.shape[:2], self.cfg.box_threshold, self.cfg.text_threshold
            )
            result.append(
                Detections(xyxy, conf, self.classes[phrase], source=np.full(len(conf), SOURCE, dtype=object))
            )
        return result


def _load(cfg: GroundingDinoConfig, ctx: BuildContext) -> tuple[Any, Any]:
    model, processor = load_pretrained(
        cfg.weights,
        ctx,
        "GroundingDinoForObjectDetection",
        "GroundingDinoProcessor",
        lambda arch: _random(arch, cfg.query),
        "perception.detector.weights",
    )
    if cfg.shortest_edge or cfg.longest_edge:
        current = processor.image_processor.size  # a SizeDict (transformers 5), read like a dict
        processor.image_processor.size = {
            "shortest_edge": cfg.shortest_edge or current["shortest_edge"],
            "longest_edge": cfg.longest_edge or current["longest_edge"],
        }
    return model, processor


def _tokenizer(query: str, vocab_size: int) -> Any:
    """A BERT WordPiece tokenizer: BERT's special tokens at BERT's ids, then the query's words."""
    from transformers import BertTokenizer

    words = sorted(set(re.findall(r"\w+|[^\w\s]", query.lower())) - set(BERT_SPECIAL_IDS))
    vocab = [f"[unused{i}]" for i in range(max(BERT_SPECIAL_IDS.values()) + 1)]
    for token, i in BERT_SPECIAL_IDS.items():
        vocab[i] = token
    vocab += words
    if len(vocab) > vocab_size:
        raise ConfigError(
            f"perception.detector.query: {len(words)} distinct words do not fit a vocabulary of {vocab_size}"
        )
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})


def _random(arch: str, query: str) -> tuple[Any, Any]:
    """A random Grounding DINO of `arch` with a tokenizer for `query` and its processor."""
    import torch
    from transformers import GroundingDinoConfig as HFConfig
    from transformers import (
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    if arch == "tiny":
        tokenizer = _tokenizer(query, 2048)
        config = HFConfig(
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            num_queries=30,
            encoder_n_points=2,
            decoder_n_points=2,
            max_text_len=64,
            backbone_config=SwinConfig(
                window_size=7, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], out_indices=[2, 3, 4]
            ),
            text_config={
                "model_type": "bert",
                "vocab_size": len(tokenizer),
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "max_position_embeddings": 64,
            },
        )
        image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 224})
    elif arch == "grounding-dino-tiny":  # transformers' default config is the tiny checkpoint's architecture
        config = HFConfig()
        tokenizer = _tokenizer(query, config.text_config.vocab_size)
        image_processor = GroundingDinoImageProcessor()
    else:
        raise ConfigError(
            f"perception.detector.weights: random:{arch}: unknown architecture "
            f"(choose random:{' or random:'.join(RANDOM_ARCHS)})"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = GroundingDinoForObjectDetection(config)
    return model, GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)


def grounding_dino_weights(cfg: GroundingDinoConfig) -> list[WeightFile]:
    """The hub snapshot a config needs (Apache-2.0)."""
    if is_random(cfg.weights):
        return []
    if cfg.weights in CHECKPOINTS_MB:
        return [
            WeightFile(
                cfg.weights,
                "huggingface",
                "Apache-2.0",
                CHECKPOINTS_MB[cfg.weights],
                f"https://huggingface.co/{cfg.weights}",
                HUB_FILES,
            )
        ]
    if Path(cfg.weights).expanduser().exists():  # a local snapshot folder
        return []
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", cfg.weights):  # another hub repository: the whole snapshot
        return [
            WeightFile(cfg.weights, "huggingface", "unknown", url=f"https://huggingface.co/{cfg.weights}")
        ]
    return [WeightFile(cfg.weights, "local", "unknown")]  # a folder that is not there: nobody can fetch it


@backend(
    "detector",
    "grounding-dino",
    GroundingDinoConfig,
    requires=("torch", "torchvision", "transformers"),
    weights=grounding_dino_weights,
)
def _build(cfg: GroundingDinoConfig, ctx: BuildContext) -> GroundingDinoDetector:
    return GroundingDinoDetector(cfg, ctx)
