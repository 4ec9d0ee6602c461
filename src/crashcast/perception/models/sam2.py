"""SAM2 image segmenter (paper §2): one mask per fused detection box, with transformers' `Sam2Model`.

The vision encoder runs once over a batch of frames; the prompt encoder and mask decoder then take
every frame's boxes in one call. Frames with no detection skip the model. Weights: the SAM 2.1
checkpoints on the Hugging Face hub (`facebook/sam2.1-hiera-{tiny,small,base-plus,large}`, Apache-2.0),
or `random:<arch>` for a randomly initialised model of that architecture (`random:tiny` for tests and
offline wiring; `random:sam2.1-hiera-large` for speed benchmarks). The architectures live here and are
shared with the video tracker (`sam2_video.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from crashcast.perception.base import FrameContext
from crashcast.perception.models._common import load_pretrained
from crashcast.perception.models.mask_dictionary import box_masks
from crashcast.perception.spec import BuildContext, backend
from crashcast.runtime.weights import RANDOM_PREFIX, WeightFile, is_random
from crashcast.settings import BackendConfig
from crashcast.types import Detections

log = logging.getLogger(__name__)

#: the SAM 2.1 checkpoints and their download sizes (MB, model.safetensors)
SAM2_CHECKPOINTS: dict[str, float] = {
    "facebook/sam2.1-hiera-large": 898.0,
    "facebook/sam2.1-hiera-base-plus": 323.0,
    "facebook/sam2.1-hiera-small": 184.0,
    "facebook/sam2.1-hiera-tiny": 156.0,
}
#: `random:<arch>` choices: the four checkpoints' architectures and a tiny one for CPU tests
RANDOM_ARCHS = ("tiny", "sam2.1-hiera-tiny", "sam2.1-hiera-small", "sam2.1-hiera-base-plus", "sam2.1-hiera-large")
#: what to fetch from a checkpoint's hub repository (allow patterns): it also holds the original
#: `.pt` checkpoint, as large again, which transformers does not need
HUB_FILES = ("*.json", "model.safetensors")
TINY_IMAGE_SIZE = 128  # `random:tiny` input side (pixels): feature maps 32, 16, 8


def check_weights(value: str) -> str:
    """A hub id, a local path, or `random:<arch>` with a known architecture."""
    if is_random(value) and value[len(RANDOM_PREFIX):] not in RANDOM_ARCHS:
        raise ValueError(f"{value!r}: random architectures are {', '.join(RANDOM_PREFIX + a for a in RANDOM_ARCHS)}")
    return value


def sam2_weights(cfg: Any) -> list[WeightFile]:
    """The weight files a SAM2 config needs: none for `random:*` or an existing local folder."""
    name = cfg.weights
    if is_random(name) or Path(name).expanduser().exists():
        return []
    return [WeightFile(name, "huggingface", "Apache-2.0", SAM2_CHECKPOINTS.get(name),
                       f"https://huggingface.co/{name}", HUB_FILES)]


def architecture(arch: str) -> dict[str, Any]:
    """Config pieces of a SAM2 architecture, shared by `Sam2Config` and `Sam2VideoConfig`: vision_config,
    prompt/mask-decoder sizes, image size, and (video) memory sizes.

    The four checkpoints follow transformers' conversion script (`convert_sam2_to_hf.py`). `tiny` is
    for CPU tests: 128-pixel input, a 5-block Hiera; its memory attention keeps the constraints of the
    video model (memory channels 64, hidden size a multiple of 64 above it, RoPE grid = the 8x8 feature
    map)."""
    from transformers import Sam2HieraDetConfig, Sam2VisionConfig

    if arch == "tiny":
        s, hidden = TINY_IMAGE_SIZE, 128
        backbone = Sam2HieraDetConfig(
            hidden_size=12, image_size=[s, s], embed_dim_per_stage=[12, 24, 48, 96], blocks_per_stage=[1, 1, 2, 1],
            num_attention_heads_per_stage=[1, 1, 1, 1], global_attention_blocks=[3], window_size_per_stage=[8, 4, 4, 2],
            window_positional_embedding_background_size=[4, 4])
        vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
                                  backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
                                  fpn_hidden_size=hidden)
        return dict(
            vision_config=vision, image_size=s,
            prompt_encoder=dict(hidden_size=hidden, image_size=s, patch_size=16, mask_input_channels=8),
            mask_decoder=dict(hidden_size=hidden, mlp_dim=128, num_attention_heads=4, iou_head_hidden_dim=32),
            memory=dict(memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
                        memory_attention_feed_forward_hidden_size=128, memory_attention_rope_feat_sizes=[s // 16, s // 16],
                        memory_encoder_hidden_size=hidden, memory_encoder_output_channels=64,
                        mask_downsampler_embed_dim=hidden, memory_fuser_embed_dim=hidden,
                        memory_fuser_intermediate_dim=128, memory_fuser_num_layers=1),
        )
    backbones: dict[str, dict[str, Any]] = {
        "sam2.1-hiera-tiny": {},
        "sam2.1-hiera-small": dict(blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13]),
        "sam2.1-hiera-base-plus": dict(hidden_size=112, embed_dim_per_stage=[112, 224, 448, 896],
                                       num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 3, 16, 3],
                                       global_attention_blocks=[12, 16, 20],
                                       window_positional_embedding_background_size=[14, 14]),
        "sam2.1-hiera-large": dict(hidden_size=144, embed_dim_per_stage=[144, 288, 576, 1152],
                                   num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 6, 36, 4],
                                   global_attention_blocks=[23, 33, 43], window_positional_embedding_background_size=[7, 7],
                                   window_size_per_stage=[8, 4, 16, 8]),
    }
    if arch not in backbones:
        raise ValueError(f"unknown SAM2 architecture {arch!r}; choices: {', '.join(RANDOM_ARCHS)}")
    backbone = Sam2HieraDetConfig(**backbones[arch])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=backbone.embed_dim_per_stage[::-1])
    return dict(vision_config=vision, image_size=1024, prompt_encoder={}, mask_decoder={}, memory={})


def image_processor_for(image_size: int) -> Any:
    from transformers import Sam2ImageProcessor

    return Sam2ImageProcessor(size={"height": image_size, "width": image_size})


def random_image_model(arch: str) -> tuple[Any, Any]:
    """A randomly initialised `Sam2Model` of `arch` and a processor at its input size."""
    from transformers import (
        Sam2Config,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2Processor,
        Sam2PromptEncoderConfig,
    )

    a = architecture(arch)
    config = Sam2Config(vision_config=a["vision_config"], prompt_encoder_config=Sam2PromptEncoderConfig(**a["prompt_encoder"]),
                        mask_decoder_config=Sam2MaskDecoderConfig(**a["mask_decoder"]))
    return Sam2Model(config), Sam2Processor(image_processor_for(a["image_size"]))


class Sam2SegmenterConfig(BackendConfig):
    name: str = "sam2"
    weights: str = Field("facebook/sam2.1-hiera-large", description="hub id (facebook/sam2.1-hiera-{large,base-plus,"
                         "small,tiny}), a local folder, or random:<arch> (random:tiny, random:sam2.1-hiera-large, ...)")
    mask_threshold: float = Field(0.0, description="mask logit threshold (0: probability 0.5)")
    box_fallback: bool = Field(True, description="a detection whose SAM2 mask is empty gets its box as mask")

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        return check_weights(value)


class Sam2Segmenter:
    """`Segmenter`: the same detections with `mask` (n, H, W) bool at each frame's size, one SAM2 mask
    per box (single-mask output, as SAM2 recommends for box prompts)."""

    name = "sam2"

    def __init__(self, model: Any, processor: Any, device: str, dtype: Any, mask_threshold: float = 0.0,
                 box_fallback: bool = True) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.device, self.dtype = device, dtype
        self.mask_threshold = mask_threshold
        self.box_fallback = box_fallback

    def segment(self, frames: Sequence[np.ndarray], detections: Sequence[Detections],
                contexts: Sequence[FrameContext] | None = None) -> list[Detections]:
        out = list(detections)
        todo = [i for i, d in enumerate(detections) if len(d)]
        if todo:
            masks = self._masks([frames[i] for i in todo], [detections[i].xyxy for i in todo])
            for i, m in zip(todo, masks, strict=True):
                out[i] = self._with_masks(detections[i], m)
        for i, (frame, d) in enumerate(zip(frames, detections, strict=True)):
            if not len(d):
                out[i] = Detections(d.xyxy, d.confidence, d.class_name, np.zeros((0, *frame.shape[:2]), bool),
                                    d.tracker_id, d.source)
        return out

    def _with_masks(self, det: Detections, masks: np.ndarray) -> Detections:
        if self.box_fallback:
            empty = ~masks.reshape(len(masks), -1).any(1)
            if empty.any():
                log.debug("sam2: %d of %d masks empty, boxes used instead", int(empty.sum()), len(masks))
                masks[empty] = box_masks(det.xyxy[empty], masks.shape[1:])
        return Detections(det.xyxy, det.confidence, det.class_name, masks, det.tracker_id, det.source)

    def _masks(self, frames: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """(n_i, H_i, W_i) bool masks for each frame's boxes: one vision pass over all frames, one decoder
        pass over all boxes. The processor refuses ragged box lists, so each frame's list is padded to the
        longest with copies of its own first box (each box is decoded on its own; the copies are dropped)."""
        import torch

        inputs = self.processor(images=list(frames), return_tensors="pt")
        sizes = inputs["original_sizes"]
        longest = max(len(b) for b in boxes)
        padded = [np.concatenate([b, np.repeat(b[:1], longest - len(b), 0)]).tolist() for b in boxes]
        prompts = self.processor(original_sizes=sizes, input_boxes=padded, return_tensors="pt")["input_boxes"]
        with torch.inference_mode():
            pixels = inputs["pixel_values"].to(self.device, self.dtype)
            embeddings = self.model.get_image_embeddings(pixels)
            result = self.model(image_embeddings=embeddings, input_boxes=prompts.to(self.device, self.dtype),
                                multimask_output=False)
            logits = result.pred_masks.float()  # (frames, boxes, 1, h, w)
            masks = self.processor.post_process_masks(logits, sizes, mask_threshold=self.mask_threshold)
        return [m[: len(b), 0].cpu().numpy() for m, b in zip(masks, boxes, strict=True)]


def load_image_model(weights: str, ctx: BuildContext) -> tuple[Any, Any]:
    """`Sam2Model` and `Sam2Processor` from a hub id or folder, or a random one for `random:<arch>`."""
    return load_pretrained(weights, ctx, "Sam2Model", "Sam2Processor", random_image_model,
                           "perception.segmenter.weights")


# torchvision: transformers' SAM2 image processor imports torchvision.ops (batched_nms)
@backend("segmenter", "sam2", Sam2SegmenterConfig, requires=("torch", "torchvision", "transformers"),
          weights=sam2_weights)
def _build(cfg: Sam2SegmenterConfig, ctx: BuildContext) -> Sam2Segmenter:
    model, processor = load_image_model(cfg.weights, ctx)
    return Sam2Segmenter(model, processor, ctx.device, ctx.dtype, cfg.mask_threshold, cfg.box_fallback)
