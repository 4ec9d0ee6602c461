"""SAM2 video tracker (paper §2): masks propagated forward over a span, then backward from objects found
late, one global id per object (`mask_dictionary.MaskDictionary`), with transformers' `Sam2VideoModel`.

`track` sees a whole span (what `extract` calls): one inference session over all the perceived frames,
a forward pass that prompts each new object with its box at the frame it is first detected, a reverse
pass from those first frames for the objects found after the first frame, and the gap rule. `update`
is the causal form (`predict`): after `reset()`, frames are added to a streaming session one at a time,
forward only, with the same id logic; the session keeps only the frames and memories SAM2 still reads.

Design choices forced by the transformers API (5.x):
- `Sam2VideoModel.forward` runs every object of a session at a frame. Matching needs the propagated
  masks before new objects are known, so a frame where objects start is run twice (propagate, then
  prompt the new ones); the second run recomputes the old objects identically (same memories) and costs
  their memory attention again, not the vision encoder (its features are cached).
- The reverse pass uses a second session that holds only the late objects (otherwise every early object
  would be re-propagated backwards as well); it shares the first session's frames and feature cache.
- Sessions have no public way to remove an object: `_remove_objects` re-indexes the session's
  per-object tables (the ones `Sam2VideoInferenceSession.reset_tracking_data` clears) so lost objects
  stop costing time.
- The session keeps every output's 1024x1024 mask logits, which only the call that made them reads;
  `SessionPropagator` frees them (a few MB per object and frame otherwise).
- SAM2 empties the mask of an object its object-score head calls absent; untrained, that head gives
  logits near zero, often negative, so random models get its bias set to "present" (`random_video_model`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from crashcast.perception.models._common import load_pretrained
from crashcast.perception.models.mask_dictionary import DictionarySettings, MaskDictionary, Propagated
from crashcast.perception.models.sam2 import architecture, check_weights, image_processor_for, sam2_weights
from crashcast.perception.spec import BuildContext, backend
from crashcast.settings import BackendConfig
from crashcast.types import Detections

log = logging.getLogger(__name__)

#: object-score logit given to random models (sigmoid ~ 1: every prompted object is "present")
RANDOM_PRESENCE_LOGIT = 10.0


def random_video_model(arch: str) -> tuple[Any, Any]:
    """A randomly initialised `Sam2VideoModel` of `arch` and its processor. The object-score head's output
    bias is set high: untrained, it would call half the objects absent and empty their masks, and the
    pipeline wiring this model serves (tests, benchmarks) needs tracks that exist."""
    import torch
    from transformers import (
        Sam2VideoConfig,
        Sam2VideoMaskDecoderConfig,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoPromptEncoderConfig,
        Sam2VideoVideoProcessor,
    )

    a = architecture(arch)
    config = Sam2VideoConfig(
        vision_config=a["vision_config"], prompt_encoder_config=Sam2VideoPromptEncoderConfig(**a["prompt_encoder"]),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(**a["mask_decoder"]), image_size=a["image_size"], **a["memory"])
    model = Sam2VideoModel(config)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(RANDOM_PRESENCE_LOGIT)
    size = {"height": a["image_size"], "width": a["image_size"]}
    return model, Sam2VideoProcessor(image_processor_for(a["image_size"]), Sam2VideoVideoProcessor(size=size))


def load_video_model(weights: str, ctx: BuildContext) -> tuple[Any, Any]:
    """`Sam2VideoModel` and `Sam2VideoProcessor` from a hub id or folder, or a random one for `random:<arch>`."""
    return load_pretrained(weights, ctx, "Sam2VideoModel", "Sam2VideoProcessor", random_video_model,
                           "perception.tracker.weights")


def _remove_objects(session: Any, ids: Collection[int]) -> None:
    """Drop objects from a `Sam2VideoInferenceSession` (no public API for it): rebuild the id <-> index maps
    and re-key the per-object tables so the remaining objects keep their inputs, outputs and memories."""
    drop = set(ids)
    keep = [i for i in session.obj_ids if i not in drop]
    if len(keep) == len(session.obj_ids):
        return
    old = [session._obj_id_to_idx[i] for i in keep]
    for table in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "frames_tracked_per_obj"):
        values = getattr(session, table)
        setattr(session, table, {new: values[o] for new, o in enumerate(old)})
    session._obj_id_to_idx = OrderedDict((i, new) for new, i in enumerate(keep))
    session._obj_idx_to_id = OrderedDict((new, i) for new, i in enumerate(keep))
    session.obj_ids = list(keep)
    session.obj_with_new_inputs = [i for i in session.obj_with_new_inputs if i not in drop]


class SessionPropagator:
    """`Propagator` over one `Sam2VideoInferenceSession`. In streaming mode the current frame's pixels are
    handed to every call (`set_frame`), as the model's streaming path expects."""

    def __init__(self, model: Any, processor: Any, session: Any, shape: tuple[int, int], mask_threshold: float,
                 streaming: bool = False) -> None:
        self.model, self.processor, self.session = model, processor, session
        self.shape, self.mask_threshold, self.streaming = shape, mask_threshold, streaming
        self._pixels: Any = None

    def set_frame(self, t: int, pixels: Any) -> None:
        """Streaming: frame `t`'s processed pixels (3, S, S); stored now so a prompt can come first."""
        self._pixels = pixels
        self.session.add_new_frame(pixels, frame_idx=t)

    def propagate(self, t: int, reverse: bool = False) -> dict[int, Propagated]:
        return self._run(t, reverse) if self.session.obj_ids else {}

    def prompt(self, t: int, boxes: Mapping[int, np.ndarray], reverse: bool = False) -> dict[int, Propagated]:
        ids = [int(i) for i in boxes]
        self.processor.add_inputs_to_inference_session(
            self.session, frame_idx=t, obj_ids=ids, input_boxes=[[[float(v) for v in boxes[i]] for i in ids]],
            original_size=self.shape if self.streaming else None)
        return self._run(t, reverse)

    def retire(self, ids: Collection[int]) -> None:
        _remove_objects(self.session, ids)

    def _run(self, t: int, reverse: bool) -> dict[int, Propagated]:
        import torch

        with torch.inference_mode():
            frame = {"frame": self._pixels} if self.streaming else {}
            out = self.model(inference_session=self.session, frame_idx=t, reverse=reverse, **frame)
            logits = out.pred_masks.float()  # (objects, 1, h, w)
            masks = self.processor.post_process_masks([logits], [list(self.shape)], mask_threshold=self.mask_threshold)
            masks = masks[0][:, 0].cpu().numpy()
            scores = torch.sigmoid(out.object_score_logits.float()).reshape(-1).cpu().numpy()
        # the session keeps each output's full-resolution mask logits (1024x1024 per object and frame) though
        # only the call that made them reads them (memory encoding): free them
        for outputs in self.session.output_dict_per_obj.values():
            for table in outputs.values():
                table.get(t, {}).pop("high_res_masks", None)
        return {int(i): Propagated(masks[k], float(scores[k])) for k, i in enumerate(out.object_ids)}

    def backward_twin(self) -> SessionPropagator:
        """A propagator with an empty session over the same frames and feature cache (the reverse pass)."""
        from transformers import Sam2VideoInferenceSession

        s = self.session
        twin = Sam2VideoInferenceSession(video_height=s.video_height, video_width=s.video_width,
                                         inference_device=s.inference_device, inference_state_device=s.inference_state_device,
                                         video_storage_device=s.video_storage_device, dtype=s.dtype,
                                         max_vision_features_cache_size=s.max_vision_features_cache_size)
        twin.processed_frames, twin.cache = s.processed_frames, s.cache
        return SessionPropagator(self.model, self.processor, twin, self.shape, self.mask_threshold)

    def forget_before(self, t: int, keep_frames: int) -> None:
        """Streaming: drop frames before `t` and per-object outputs older than `keep_frames` before it
        (SAM2 reads at most `num_maskmem` past memories and `max_object_pointers_in_encoder` pointers;
        prompted frames are kept)."""
        s = self.session
        for k in [k for k in s.processed_frames if k < t]:
            del s.processed_frames[k]
        oldest = t - keep_frames
        for idx in s.output_dict_per_obj:
            for table in (s.output_dict_per_obj[idx]["non_cond_frame_outputs"], s.frames_tracked_per_obj[idx]):
                for k in [k for k in table if k < oldest]:
                    del table[k]


class Sam2VideoTrackerConfig(BackendConfig):
    name: str = "sam2-video"
    weights: str = Field("facebook/sam2.1-hiera-large", description="hub id (facebook/sam2.1-hiera-{large,base-plus,"
                         "small,tiny}), a local folder, or random:<arch> (random:tiny, random:sam2.1-hiera-large, ...)")
    match_iou: float = Field(0.5, gt=0, lt=1, description="mask IoU above which a detection keeps a tracked object's id")
    new_object_confidence: float = Field(0.25, ge=0, le=1, description="unmatched detections below this start no object")
    max_objects: int = Field(32, ge=1, le=1024, description="objects tracked at once (SAM2 runs each one at every frame)")
    lost_buffer_frames: int = Field(15, ge=0, le=10_000, description="perceived frames an object may have an empty mask and come back")
    reverse: bool = Field(True, description="propagate objects first found late backwards (span tracking only)")
    reverse_max_frames: int | None = Field(None, ge=1, le=100_000, description="how far back (perceived frames); null: span start")
    mask_threshold: float = Field(0.0, description="mask logit threshold (0: probability 0.5)")
    feature_cache_frames: int = Field(64, ge=1, le=10_000, description="frames whose image features stay cached for the "
                                      "reverse pass (memory: ~50 MB per frame in float16, any variant; results "
                                      "do not depend on it)")

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        return check_weights(value)


class Sam2VideoTracker:
    """`SpanTracker` with SAM2 video propagation; `lost_buffer_frames` tells the pipeline how long an
    object without a mask may still come back (it keeps the object's class votes as long)."""

    name = "sam2-video"

    def __init__(self, model: Any, processor: Any, device: str, dtype: Any, settings: DictionarySettings,
                 reverse: bool = True, mask_threshold: float = 0.0, feature_cache_frames: int = 64) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.device, self.dtype = device, dtype
        self.settings = settings
        self.reverse = reverse
        self.mask_threshold = mask_threshold
        self.feature_cache_frames = feature_cache_frames
        self.lost_buffer_frames = settings.lost_buffer_frames
        # frames of per-object outputs SAM2 may read back in time (the streaming session keeps this many)
        cfg = model.config
        self.memory_frames = max(cfg.num_maskmem, cfg.max_object_pointers_in_encoder) + 1
        self.reset()

    # ---- a whole span --------------------------------------------------------------------------
    def track(self, frames: Sequence[np.ndarray], detections: Sequence[Detections],
              times_s: Sequence[float]) -> list[Detections]:
        if len(frames) != len(detections):
            raise ValueError(f"track: {len(frames)} frames but {len(detections)} detection sets")
        if not len(frames):
            return []
        shape = frames[0].shape[:2]
        session = self.processor.init_video_session(
            video=list(frames), inference_device=self.device, dtype=self.dtype,
            max_vision_features_cache_size=min(len(frames), self.feature_cache_frames))
        propagator = SessionPropagator(self.model, self.processor, session, shape, self.mask_threshold)
        book = MaskDictionary(self.settings, shape)
        for t, det in enumerate(detections):
            book.step(propagator, t, det)
        found, late = len(book.objects), sum(o.first_frame > 0 for o in book.objects.values())
        if self.reverse:
            book.reverse_pass(propagator.backward_twin())
            book.join_gaps()
        log.debug("sam2-video: %d frames, %d objects (%d found after the first frame), %d after joining gaps",
                  len(frames), found, late, len(book.objects))
        return [book.frame(t) for t in range(len(frames))]

    # ---- streaming -----------------------------------------------------------------------------
    def reset(self) -> None:
        self._stream: tuple[SessionPropagator, MaskDictionary] | None = None
        self._t = 0

    def update(self, frame: np.ndarray, detections: Detections, time_s: float) -> Detections:
        shape = frame.shape[:2]
        if self._stream is None or self._stream[1].shape != shape:
            session = self.processor.init_video_session(inference_device=self.device, dtype=self.dtype)
            propagator = SessionPropagator(self.model, self.processor, session, shape, self.mask_threshold, streaming=True)
            self._stream, self._t = (propagator, MaskDictionary(self.settings, shape)), 0
        propagator, book = self._stream
        t = self._t
        pixels = self.processor(images=frame, return_tensors="pt")["pixel_values"][0]
        propagator.set_frame(t, pixels)
        book.step(propagator, t, detections)
        out = book.frame(t)
        book.forget_before(t + 1)
        propagator.forget_before(t + 1, self.memory_frames)
        self._t += 1
        return out


# torchvision: transformers' SAM2 image processor imports torchvision.ops (batched_nms)
@backend("tracker", "sam2-video", Sam2VideoTrackerConfig, requires=("torch", "torchvision", "transformers"),
          weights=sam2_weights)
def _build(cfg: Sam2VideoTrackerConfig, ctx: BuildContext) -> Sam2VideoTracker:
    model, processor = load_video_model(cfg.weights, ctx)
    settings = DictionarySettings(cfg.match_iou, cfg.new_object_confidence, cfg.max_objects, cfg.lost_buffer_frames,
                                  cfg.reverse_max_frames)
    return Sam2VideoTracker(model, processor, ctx.device, ctx.dtype, settings, cfg.reverse, cfg.mask_threshold,
                            cfg.feature_cache_frames)
