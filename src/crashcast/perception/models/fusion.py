"""The paper's detector fusion: several detectors (YOLOv8x and Grounding DINO) on the same frames, their
boxes pooled and de-duplicated.

Two steps, as the authors did them:
1. `detect`: every sub-detector runs on the batch; per frame the boxes are concatenated and reduced by
   class-aware NMS on crashcast's coarse classes (supervision's `box_non_max_suppression`, IoU
   `iou_threshold`, 0.5 by default), so YOLO's "car" and DINO's "car." on one object become one box,
   the higher-scoring.
2. `merge_masks` (the `MaskMerger` Protocol; the pipeline calls it once the segmenter filled the
   masks): boxes that overlap by box IoU > `merge_box_iou` (0.5) *and* whose masks overlap by mask
   IoU > `merge_mask_iou` (0.7) are one object; the higher score wins. This also catches what NMS
   cannot: the same object under two coarse classes (a rider boxed as person by one detector and as
   cyclist by the other), so by default it ignores classes (`merge_same_class_only: false`).

Every kept box keeps its `source` (the name of the detector that found it). The suppression rules are
plain functions (`class_aware_nms`, `mask_merge`: numpy in, numpy out) so they can be tested alone;
their IoUs are supervision's (`box_iou_batch`, `mask_iou_batch`), so the merging needs no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from crashcast.perception.base import FrameContext
from crashcast.perception.classic.detect import MotionDetectorConfig
from crashcast.perception.models.grounding_dino import GroundingDinoConfig
from crashcast.perception.models.yolo import YoloConfig
from crashcast.perception.spec import BuildContext, backend
from crashcast.settings import BackendConfig, backend_config, stage_type
from crashcast.types import CLASS_NAMES, Detections

log = logging.getLogger(__name__)


def _paper_detectors() -> list[Any]:
    return [YoloConfig(), GroundingDinoConfig()]


def _sub_detector(value: Any) -> BackendConfig:
    """One sub-detector's config, typed by the config class of its backend: the built-in detectors
    are known here (so a FusionConfig validates before the registry is loaded), a user's registered
    ones through the registry's table."""
    known = {"classic-motion": MotionDetectorConfig, "yolo": YoloConfig, "grounding-dino": GroundingDinoConfig,
             "fusion": FusionConfig}
    return backend_config("detector", value, "classic-motion", known)


SubDetector = stage_type("detector", _sub_detector)


class FusionConfig(BackendConfig):
    """Detectors to fuse and the thresholds of the two de-duplication steps."""

    name: str = "fusion"
    detectors: list[SubDetector] = Field(
        default_factory=_paper_detectors,
        min_length=1,
        description="detector configs, each as a stage's detector (e.g. {name: yolo, weights: yolov8x.pt})",
    )
    iou_threshold: float = Field(0.5, gt=0, le=1, description="class-aware NMS over the pooled boxes")
    merge_box_iou: float = Field(
        0.5, ge=0, le=1, description="mask merge: boxes overlapping more than this..."
    )
    merge_mask_iou: float = Field(
        0.7, ge=0, le=1, description="... whose masks overlap more than this are one object"
    )
    merge_same_class_only: bool = Field(False, description="mask merge only within a coarse class")

    @field_validator("detectors")
    @classmethod
    def _no_nesting(cls, v: list[Any]) -> list[Any]:
        if any(d.name == "fusion" for d in v):
            raise ValueError("a fusion's detectors cannot include another fusion")
        return v


# --- the suppression rules (numpy in, numpy out) ---------------------------------------------------


def class_aware_nms(
    xyxy: np.ndarray, scores: np.ndarray, class_idx: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Indices of the boxes kept by per-class greedy NMS, highest score first (equal scores: the earlier
    box first): a box is dropped when a kept, higher-ranked box of its class overlaps it by IoU >
    iou_threshold (the IoU rounded to float32, as torchvision's `batched_nms`, used before, had it).
    supervision's `box_non_max_suppression` does the suppression; its own ordering (an unstable
    descending argsort) would put equal scores in reverse order, so the boxes go to it already ranked,
    with their rank as the score."""
    n = len(xyxy)
    if n == 0:
        return np.zeros(0, np.int64)
    import supervision as sv

    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    ranked = np.column_stack(
        [np.asarray(xyxy, np.float32).reshape(-1, 4)[order], n - np.arange(n), np.asarray(class_idx)[order]]
    ).astype(np.float64)
    keep = sv.box_non_max_suppression(ranked, iou_threshold=float(iou_threshold))
    return order[keep].astype(np.int64)


def mask_iou_pairs(masks: np.ndarray, xyxy: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(k,) float32 mask IoU (supervision's `mask_iou_batch`) of each (i, j) in pairs (k, 2), counted
    inside the union of the two boxes only (a mask outside its box is ignored: segmenters keep masks
    inside their prompt box)."""
    import supervision as sv

    out = np.zeros(len(pairs), np.float32)
    h, w = masks.shape[1:]
    for k, (i, j) in enumerate(pairs):
        x0 = int(np.floor(max(0, min(xyxy[i, 0], xyxy[j, 0]))))
        y0 = int(np.floor(max(0, min(xyxy[i, 1], xyxy[j, 1]))))
        x1 = int(np.ceil(min(w, max(xyxy[i, 2], xyxy[j, 2]))))
        y1 = int(np.ceil(min(h, max(xyxy[i, 3], xyxy[j, 3]))))
        crop = masks[[i, j], y0:y1, x0:x1]
        out[k] = sv.mask_iou_batch(crop[:1], crop[1:])[0, 0]
    return out


def mask_merge(
    xyxy: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    box_iou_threshold: float = 0.5,
    mask_iou_threshold: float = 0.7,
    class_idx: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the boxes kept by the authors' mask-IoU merge, highest score first: a box is dropped
    when a kept, higher-scoring box overlaps it by box IoU > box_iou_threshold and mask IoU >
    mask_iou_threshold (and has the same class, when `class_idx` is given).

    xyxy (n, 4), scores (n,), masks (n, H, W) bool.

    supervision's IoUs are float32 values; they are compared with the thresholds in float32, so an IoU
    equal to a threshold (0.3 for instance, which float32 rounds up) is not above it."""
    n = len(xyxy)
    if n == 0:
        return np.zeros(0, np.int64)
    import supervision as sv

    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    masks = np.asarray(masks, bool)
    same = sv.box_iou_batch(xyxy, xyxy) > np.float32(box_iou_threshold)
    if class_idx is not None:
        same &= np.asarray(class_idx)[:, None] == np.asarray(class_idx)[None, :]
    np.fill_diagonal(same, False)
    pairs = np.argwhere(np.triu(same))
    if len(pairs):  # only box-overlapping pairs need the (costly) mask comparison
        same[:] = False
        hit = pairs[mask_iou_pairs(masks, xyxy, pairs) > np.float32(mask_iou_threshold)]
        same[hit[:, 0], hit[:, 1]] = same[hit[:, 1], hit[:, 0]] = True
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    removed = np.zeros(n, bool)
    for i in order:  # greedy, as NMS: a box removed by a kept one removes nothing itself
        if removed[i]:
            continue
        keep.append(int(i))
        removed |= same[i]
    return np.array(keep, np.int64)


def concat(dets: Sequence[Detections]) -> Detections:
    """One frame's detections from several detectors, pooled. Masks are kept only when every part
    has them; tracker ids are dropped (fusion comes before tracking)."""
    dets = [d for d in dets if len(d)]
    if not dets:
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, object),
            source=np.zeros(0, object),
        )
    masks = None
    if all(d.mask is not None for d in dets) and len({d.mask.shape[1:] for d in dets}) == 1:
        masks = np.concatenate([d.mask for d in dets])
    sources = [d.source if d.source is not None else np.full(len(d), "unknown", object) for d in dets]
    return Detections(
        np.concatenate([d.xyxy for d in dets]),
        np.concatenate([d.confidence for d in dets]),
        np.concatenate([d.class_name for d in dets]),
        mask=masks,
        source=np.concatenate(sources),
    )


def _class_index(names: np.ndarray) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(CLASS_NAMES)}
    return np.array([lookup.get(str(c), len(CLASS_NAMES) - 1) for c in names], np.int64)


# --- the backend -----------------------------------------------------------------------------------


class FusionDetector:
    """`Detector` and `MaskMerger`: runs its detectors on each batch and de-duplicates their boxes."""

    name = "fusion"

    def __init__(self, cfg: FusionConfig, detectors: Sequence[Any]) -> None:
        self.cfg = cfg
        self.detectors = list(detectors)
        # the pipeline runs the road-motion context stage when a detector needs it (classic-motion)
        self.uses_context = any(getattr(d, "uses_context", False) for d in self.detectors)

    def detect(
        self, frames: Sequence[np.ndarray], contexts: Sequence[FrameContext] | None = None
    ) -> list[Detections]:
        """Per frame: every detector's boxes pooled, then class-aware NMS."""
        if len(frames) == 0:
            return []
        per_detector = [d.detect(frames, contexts) for d in self.detectors]
        out = []
        for i in range(len(frames)):
            pooled = concat([dets[i] for dets in per_detector])
            keep = class_aware_nms(
                pooled.xyxy, pooled.confidence, _class_index(pooled.class_name), self.cfg.iou_threshold
            )
            out.append(pooled[keep])
        return out

    def merge_masks(self, detections: Detections) -> Detections:
        """The same detections less the boxes that duplicate a higher-scoring one by box and mask IoU
        (unchanged when they have no masks)."""
        if detections.mask is None or len(detections) < 2:
            return detections
        keep = mask_merge(
            detections.xyxy,
            detections.confidence,
            detections.mask,
            self.cfg.merge_box_iou,
            self.cfg.merge_mask_iou,
            _class_index(detections.class_name) if self.cfg.merge_same_class_only else None,
        )
        return detections[keep]


def _children(cfg: FusionConfig) -> list[tuple[str, BackendConfig]]:
    """The sub-detectors: the registry adds their packages and weight files to the fusion's own."""
    return [("detector", sub) for sub in cfg.detectors]


@backend("detector", "fusion", FusionConfig, children=_children)  # supervision (a base dependency) merges
def _build(cfg: FusionConfig, ctx: BuildContext) -> FusionDetector:
    return FusionDetector(cfg, [ctx.create("detector", sub) for sub in cfg.detectors])
