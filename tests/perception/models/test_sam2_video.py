"""SAM2 video tracker: the mask-dictionary id logic checked exactly against a synthetic clip with an
oracle propagator, then the real (tiny, randomly initialised) `Sam2VideoModel` end to end through
`track()` and `update()` for the contract (its masks are meaningless, its ids and shapes are not)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from crashcast.perception.models.mask_dictionary import (
    PROPAGATED_SOURCE,
    DictionarySettings,
    MaskDictionary,
    Propagated,
    box_masks,
    mask_boxes,
    mask_iou,
)
from crashcast.types import Detections

H, W, T = 48, 64, 10


def rect(x: int, y: int, w: int, h: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y: y + h, x: x + w] = True
    return m


def moving(x0: int, y0: int, dx: int, size: tuple[int, int] = (10, 8)) -> list[np.ndarray]:
    return [rect(x0 + dx * t, y0, *size) for t in range(T)]


class OraclePropagator:
    """Test double, not SAM2: a perfect video propagator. It knows every object's true mask at every frame;
    a prompt box picks the true object it overlaps most, and that object's true mask is returned for the
    prompted id from then on, with visibility score `score`. `blind` ({id: frames}) makes it lose chosen ids
    at chosen frames (empty masks, score 0), as a real tracker may; its backward twin sees everything."""

    def __init__(self, truth: dict[str, list[np.ndarray]], blind: dict[int, set[int]] | None = None,
                 score: float = 0.9) -> None:
        self.truth, self.blind, self.score = truth, blind or {}, score
        self.tracked: dict[int, str] = {}
        self.calls: list[tuple] = []
        self.retired: list[int] = []

    def _out(self, t: int) -> dict[int, Propagated]:
        out = {}
        for i, k in self.tracked.items():
            mask = self.truth[k][t]
            if t in self.blind.get(i, ()) or not mask.any():
                out[i] = Propagated(np.zeros((H, W), bool), 0.0)
            else:
                out[i] = Propagated(mask.copy(), self.score)
        return out

    def propagate(self, t, reverse=False):
        self.calls.append(("propagate", t, reverse, tuple(self.tracked)))
        return self._out(t)

    def prompt(self, t, boxes, reverse=False):
        for i, box in boxes.items():
            prompt = box_masks(np.asarray(box)[None], (H, W))
            keys = list(self.truth)
            self.tracked[i] = keys[int(np.argmax(mask_iou(prompt, np.stack([self.truth[k][t] for k in keys]))[0]))]
        self.calls.append(("prompt", t, reverse, tuple(boxes)))
        return self._out(t)

    def retire(self, ids):
        for i in ids:
            del self.tracked[i]
        self.retired += list(ids)

    def twin(self) -> OraclePropagator:
        return OraclePropagator(self.truth, score=self.score)


def detect(truth: dict[str, list[np.ndarray]], seen: dict[str, range | list[int]], *, classes=None, conf=None,
           with_masks: bool = False) -> list[Detections]:
    """Per frame, a detection (box = the true mask's box) of each object at the frames it is `seen`."""
    out = []
    for t in range(T):
        keys = [k for k in truth if t in seen.get(k, ()) and truth[k][t].any()]
        masks = np.stack([truth[k][t] for k in keys]) if keys else np.zeros((0, H, W), bool)
        out.append(Detections(
            mask_boxes(masks),
            [conf(k, t) if conf else 0.9 for k in keys],
            np.array([classes(k, t) if classes else "vehicle" for k in keys], object),
            masks if with_masks else None, None, np.array(["yolo"] * len(keys), object)))
    return out


def run_span(truth, dets, settings=DictionarySettings(), blind=None, reverse=True):
    """What `Sam2VideoTracker.track` does, with the oracle in place of SAM2."""
    forward = OraclePropagator(truth, blind)
    book = MaskDictionary(settings, (H, W))
    for t, d in enumerate(dets):
        book.step(forward, t, d)
    back = forward.twin()
    if reverse:
        book.reverse_pass(back)
        book.join_gaps()
    return [book.frame(t) for t in range(T)], book, forward, back


def masks_by_id(frames: list[Detections]) -> dict[int, dict[int, np.ndarray]]:
    out: dict[int, dict[int, np.ndarray]] = {}
    for t, d in enumerate(frames):
        for i, m in zip(d.tracker_id, d.mask, strict=True):
            out.setdefault(int(i), {})[t] = m
    return out


# ---- the id logic, exactly --------------------------------------------------------------------

@pytest.mark.parametrize("with_masks", [False, True])
def test_two_objects_keep_their_ids_and_late_one_gets_masks_before_first_detection(with_masks):
    truth = {"A": moving(2, 5, 3), "B": moving(50, 30, -3, (12, 10))}
    dets = detect(truth, {"A": range(T), "B": range(5, T)}, with_masks=with_masks)
    frames, _, _, back = run_span(truth, dets)

    tracks = masks_by_id(frames)
    assert sorted(tracks) == [1, 2]  # one id per object over the whole span
    a, b = tracks[1], tracks[2]
    assert sorted(a) == list(range(T)) and all(np.array_equal(a[t], truth["A"][t]) for t in range(T))
    # reverse propagation: B has its true masks at the frames before its first detection (5)
    assert sorted(b) == list(range(T)) and all(np.array_equal(b[t], truth["B"][t]) for t in range(T))
    for t, d in enumerate(frames):
        assert np.array_equal(d.xyxy, mask_boxes(d.mask))
        assert d.mask.shape == (len(d), H, W) and d.mask.dtype == bool and d.tracker_id.dtype == np.int64
        src = dict(zip(d.tracker_id.tolist(), d.source, strict=True))
        assert src[1] == "yolo" and src[2] == ("yolo" if t >= 5 else PROPAGATED_SOURCE)
    # the backward twin prompted B at its first frame, then went back in time to frame 0
    assert back.calls[0] == ("prompt", 5, True, (2,))
    assert [c[1] for c in back.calls[1:]] == [4, 3, 2, 1, 0] and all(c[2] for c in back.calls)


def test_without_reverse_pass_late_object_is_absent_before_first_detection():
    truth = {"A": moving(2, 5, 3), "B": moving(50, 30, -3)}
    frames, *_ = run_span(truth, detect(truth, {"A": range(T), "B": range(5, T)}), reverse=False)
    assert [sorted(d.tracker_id.tolist()) for d in frames] == [[1]] * 5 + [[1, 2]] * 5


def test_overlapping_detection_keeps_id_distinct_one_is_new_duplicate_is_dropped():
    truth = {"A": moving(2, 5, 3), "B": moving(40, 30, 0)}
    book, prop = MaskDictionary(DictionarySettings(match_iou=0.5), (H, W)), OraclePropagator(truth)
    box_a = mask_boxes(truth["A"][0][None])[0]
    book.step(prop, 0, Detections(box_a[None], [0.9], np.array(["vehicle"], object)))
    # frame 1: A's box shifted by 1 px (IoU with A's propagated mask > 0.5), a second, smaller box on A
    # (a duplicate: A is already claimed), and a box on B (overlaps nothing tracked)
    a1 = mask_boxes(truth["A"][1][None])[0]
    b1 = mask_boxes(truth["B"][1][None])[0]
    boxes = np.stack([a1 + np.array([1, 0, 1, 0]), a1 + np.array([2, 1, -1, 0]), b1])
    book.step(prop, 1, Detections(boxes, [0.9, 0.8, 0.9], np.array(["vehicle"] * 3, object)))
    out = book.frame(1)
    assert sorted(out.tracker_id.tolist()) == [1, 2]
    assert prop.tracked == {1: "A", 2: "B"}
    assert book.objects[1].detected[1] == (pytest.approx(0.9), "sam2")  # the best box, not the duplicate


def test_object_lost_by_tracker_comes_back_with_its_id_and_the_gap_is_filled():
    # C is visible throughout; the detector misses it at frames 4-5 and the forward tracker loses id 1
    # there, so id 1 is retired (lost_buffer_frames=1) and C's detection at frame 6 starts a new object;
    # its backward masks overlap id 1's last masks: it is id 1 coming back, and the gap is filled
    truth = {"C": moving(2, 5, 3)}
    seen = {"C": [0, 1, 2, 3, 6, 7, 8, 9]}
    frames, _, forward, _ = run_span(truth, detect(truth, seen), DictionarySettings(lost_buffer_frames=1),
                                        blind={1: {4, 5}})
    assert forward.retired == [1]  # retired in the forward pass at frame 5
    tracks = masks_by_id(frames)
    assert sorted(tracks) == [1]
    assert all(np.array_equal(tracks[1][t], truth["C"][t]) for t in range(T))
    assert [frames[t].source[0] for t in (3, 4, 5, 6)] == ["yolo", PROPAGATED_SOURCE, PROPAGATED_SOURCE, "yolo"]

    # without the reverse pass the gap stays and the comeback keeps a new id
    frames, *_ = run_span(truth, detect(truth, seen), DictionarySettings(lost_buffer_frames=1), blind={1: {4, 5}},
                          reverse=False)
    assert [d.tracker_id.tolist() for d in frames] == [[1]] * 4 + [[]] * 2 + [[2]] * 4


def test_lost_object_is_absent_then_retired():
    truth = {"A": moving(2, 5, 3), "B": moving(40, 30, 0)}
    dets = detect(truth, {"A": range(3), "B": range(T)})
    frames, _, forward, _ = run_span(truth, dets, DictionarySettings(lost_buffer_frames=2), blind={1: set(range(3, T))},
                                        reverse=False)
    assert [1 in d.tracker_id for d in frames] == [True] * 3 + [False] * 7
    assert forward.retired == [1]
    # frames 3, 4, 5 are empty; retired after the third (> 2): no propagation of id 1 from frame 6 on
    assert all(1 not in c[3] for c in forward.calls if c[0] == "propagate" and c[1] >= 6)
    assert any(1 in c[3] for c in forward.calls if c[0] == "propagate" and c[1] == 5)


def test_majority_class_and_confidence_of_propagated_frames():
    truth = {"A": moving(2, 5, 3)}
    dets = detect(truth, {"A": [0, 1, 2, 3]}, classes=lambda k, t: "person" if t == 3 else "vehicle",
                  conf=lambda k, t: 0.6 if t == 3 else 0.8)
    frames, *_ = run_span(truth, dets)
    assert all(d.class_name.tolist() == ["vehicle"] for d in frames)
    assert [float(frames[t].confidence[0]) for t in range(4)] == pytest.approx([0.8, 0.8, 0.8, 0.6])
    # not detected: mean detection confidence x the tracker's visibility score (oracle: 0.9)
    assert float(frames[6].confidence[0]) == pytest.approx(0.75 * 0.9)


def test_new_object_thresholds_and_capacity():
    truth = {"A": moving(2, 5, 3), "B": moving(40, 30, 0), "C": moving(20, 25, 1)}
    dets = detect(truth, {"A": range(T), "B": range(T), "C": range(T)}, conf=lambda k, t: 0.1 if k == "C" else 0.9)
    frames, *_ = run_span(truth, dets, DictionarySettings(new_object_confidence=0.25, max_objects=1))
    assert all(d.tracker_id.tolist() == [1] for d in frames)  # C too weak, B over capacity


def test_reverse_max_frames_limits_how_far_back():
    truth = {"A": moving(2, 5, 3), "B": moving(50, 30, -3)}
    frames, *_ = run_span(truth, detect(truth, {"A": range(T), "B": range(5, T)}),
                          DictionarySettings(reverse_max_frames=2))
    assert sorted(masks_by_id(frames)[2]) == [3, 4, 5, 6, 7, 8, 9]


def test_streaming_forgets_the_past():
    truth = {"A": moving(2, 5, 3), "B": moving(50, 30, -3)}
    dets = detect(truth, {"A": range(T), "B": range(5, T)})
    book, prop = MaskDictionary(DictionarySettings(), (H, W)), OraclePropagator(truth)
    for t, d in enumerate(dets):
        book.step(prop, t, d)
        out = book.frame(t)
        book.forget_before(t + 1)
        assert sorted(out.tracker_id.tolist()) == ([1, 2] if t >= 5 else [1])  # causal: no reverse pass
        assert all(not o.masks and not o.detected for o in book.objects.values())
    assert book.objects[1].class_name == "vehicle" and book.objects[1].mean_confidence == pytest.approx(0.9)


def test_mask_helpers_against_direct_computation():
    a, b = rect(0, 0, 10, 10), rect(5, 0, 10, 10)
    iou = mask_iou(np.stack([a, b, np.zeros_like(a)]), np.stack([a, b]))
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[0, 0] == 1 and (iou[2] == 0).all()
    assert mask_boxes(np.stack([b, np.zeros_like(b)])).tolist() == [[5, 0, 15, 10], [0, 0, 0, 0]]
    assert np.array_equal(box_masks(np.array([[5, 0, 15, 10]]), (H, W))[0], b)


def test_mask_iou_is_the_float32_quotient_of_pixel_counts():
    """supervision's mask IoU, as the dictionary uses it: float32, exactly count(a & b) / count(a | b)
    rounded to float32 (0 where both are empty), so thresholds compare as before."""
    rng = np.random.default_rng(0)
    a = rng.random((6, 30, 40)) < rng.uniform(0, 0.6, (6, 1, 1))
    b = rng.random((5, 30, 40)) < rng.uniform(0, 0.6, (5, 1, 1))
    a[0] = b[0] = False
    iou = mask_iou(a, b)
    assert iou.dtype == np.float32 and iou.shape == (6, 5)
    for i in range(6):
        for j in range(5):
            union = int((a[i] | b[j]).sum())
            expected = np.float32(int((a[i] & b[j]).sum())) / np.float32(union) if union else np.float32(0)
            assert iou[i, j] == expected


# ---- the real model (tiny, random weights) -----------------------------------------------------

needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="needs transformers (the [vision] extra)")

FH, FW, FT = 90, 160, 5


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine run far faster single-threaded."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tracker(one_thread):
    import torch

    from crashcast.perception import registry
    from crashcast.perception.models.sam2_video import Sam2VideoTrackerConfig
    from crashcast.perception.spec import BuildContext

    torch.manual_seed(0)
    return registry.create("tracker", Sam2VideoTrackerConfig(weights="random:tiny"), BuildContext())


@pytest.fixture(scope="module")
def clip_frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (FH, FW, 3), np.uint8) for _ in range(FT)]


def boxes_at(boxes: dict[int, list[list[float]]], n: int = FT) -> list[Detections]:
    out = []
    for t in range(n):
        b = np.array(boxes.get(t, []), np.float32).reshape(-1, 4)
        out.append(Detections(b, np.full(len(b), 0.9), np.array(["vehicle"] * len(b), object), None, None,
                              np.array(["yolo"] * len(b), object)))
    return out


A_BOX, B_BOX = [10, 10, 60, 50], [100, 40, 150, 85]


def check_frame(d: Detections) -> None:
    assert d.mask.shape == (len(d), FH, FW) and d.mask.dtype == bool
    assert d.tracker_id.dtype == np.int64 and len(d.tracker_id) == len(d) == len(d.source) == len(d.confidence)
    assert np.array_equal(d.xyxy, mask_boxes(d.mask)) and d.mask.reshape(len(d), -1).any(1).all()
    assert ((d.confidence >= 0) & (d.confidence <= 1)).all()


@needs_transformers
def test_protocol(tracker):
    from crashcast.perception.base import SpanTracker, Tracker

    assert isinstance(tracker, SpanTracker) and isinstance(tracker, Tracker)
    assert tracker.name == "sam2-video" and isinstance(tracker.lost_buffer_frames, int)


@needs_transformers
def test_track_reverse_pass_with_the_model(tracker, clip_frames):
    # A detected only at frame 0, B only at frame 3: one id each, B gets masks before frame 3
    dets = boxes_at({0: [A_BOX], 3: [B_BOX]})
    out = tracker.track(clip_frames, dets, [0.1 * t for t in range(FT)])
    assert len(out) == FT
    for d in out:
        check_frame(d)
    assert [d.tracker_id.tolist() for d in out] == [[1, 2]] * FT
    assert [d.source.tolist() for d in out] == [["yolo", PROPAGATED_SOURCE]] + [[PROPAGATED_SOURCE] * 2] * 2 + \
        [[PROPAGATED_SOURCE, "yolo"]] + [[PROPAGATED_SOURCE] * 2]
    tracker.reverse = False
    try:
        forward_only = tracker.track(clip_frames, dets, [0.1 * t for t in range(FT)])
    finally:
        tracker.reverse = True
    assert [d.tracker_id.tolist() for d in forward_only] == [[1]] * 3 + [[1, 2]] * 2
    # the forward pass is the same with or without the reverse pass
    for a, b in zip(out, forward_only, strict=True):
        assert np.array_equal(a.mask[0], b.mask[0])


@needs_transformers
def test_track_matches_a_detection_to_the_model_propagated_mask(tracker, clip_frames):
    first = tracker.track(clip_frames, boxes_at({0: [A_BOX]}), [0.0] * FT)
    propagated = first[1].mask[0]  # the model's mask of object 1 at frame 1
    dets = boxes_at({0: [A_BOX]})
    # frame 1: a detection whose (segmenter) mask is that propagated mask, and one on the rest of the frame
    dets[1] = Detections(np.stack([mask_boxes(propagated[None])[0], [0, 0, FW, FH]]), [0.9, 0.9],
                         np.array(["vehicle", "person"], object), np.stack([propagated, ~propagated]))
    out = tracker.track(clip_frames, dets, [0.0] * FT)
    assert out[1].tracker_id.tolist() == [1, 2]
    assert out[1].class_name.tolist() == ["vehicle", "person"]
    assert np.array_equal(out[1].mask[0], propagated)


@needs_transformers
def test_track_without_detections_and_empty_span(tracker, clip_frames):
    out = tracker.track(clip_frames, boxes_at({}), [0.0] * FT)
    assert all(len(d) == 0 and d.mask.shape == (0, FH, FW) for d in out)
    assert tracker.track([], [], []) == []


@needs_transformers
def test_update_is_causal_and_bounded(tracker, clip_frames):
    tracker.reset()
    dets = boxes_at({0: [A_BOX], 3: [B_BOX]})
    keep = tracker.memory_frames
    tracker.memory_frames = 2
    try:
        out = [tracker.update(f, d, 0.1 * t) for t, (f, d) in enumerate(zip(clip_frames, dets, strict=True))]
        propagator, _ = tracker._stream
        session = propagator.session
        assert len(session.processed_frames) <= 1
        for idx in session.output_dict_per_obj:
            assert min(session.output_dict_per_obj[idx]["non_cond_frame_outputs"], default=FT) >= FT - 2
    finally:
        tracker.memory_frames = keep
    for d in out:
        check_frame(d)
    assert [d.tracker_id.tolist() for d in out] == [[1]] * 3 + [[1, 2]] * 2  # no reverse pass when streaming
    assert out[3].source.tolist() == [PROPAGATED_SOURCE, "yolo"]
    tracker.reset()
    assert tracker.update(clip_frames[0], boxes_at({})[0], 0.0).tracker_id.tolist() == []
    assert tracker.update(clip_frames[1], boxes_at({1: [B_BOX]})[1], 0.1).tracker_id.tolist() == [1]  # ids restart


@needs_transformers
def test_removing_an_object_leaves_the_others_unchanged(tracker, clip_frames):
    import torch

    from crashcast.perception.models.sam2_video import SessionPropagator

    def session_outputs(drop_after: int | None) -> dict[int, np.ndarray]:
        session = tracker.processor.init_video_session(video=clip_frames, inference_device="cpu")
        prop = SessionPropagator(tracker.model, tracker.processor, session, (FH, FW), 0.0)
        prop.prompt(0, {1: np.array(A_BOX), 2: np.array(B_BOX), 3: np.array([60, 20, 100, 60])})
        out = {}
        for t in range(1, 4):
            if drop_after is not None and t == drop_after + 1:
                prop.retire([2])
            with torch.inference_mode():
                o = tracker.model(inference_session=session, frame_idx=t)
            out = {int(i): o.pred_masks[k].float().numpy() for k, i in enumerate(o.object_ids)}
        return out

    kept, full = session_outputs(drop_after=1), session_outputs(drop_after=None)
    assert sorted(kept) == [1, 3] and sorted(full) == [1, 2, 3]
    for i in (1, 3):
        np.testing.assert_allclose(kept[i], full[i], atol=1e-5)


def test_config_checks_weights():
    from pydantic import ValidationError

    from crashcast.perception.models.sam2 import sam2_weights
    from crashcast.perception.models.sam2_video import Sam2VideoTrackerConfig

    with pytest.raises(ValidationError, match="random architectures"):
        Sam2VideoTrackerConfig(weights="random:huge")
    assert sam2_weights(Sam2VideoTrackerConfig(weights="random:tiny")) == []
    (w,) = sam2_weights(Sam2VideoTrackerConfig())
    assert (w.name, w.source, w.licence, w.size_mb) == ("facebook/sam2.1-hiera-large", "huggingface", "Apache-2.0", 898.0)
