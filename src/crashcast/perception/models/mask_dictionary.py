"""The paper's mask dictionary: one global id per object over a clip span, from the masks SAM2 propagates.

SAM2's video predictor follows every object it was prompted with; it does not decide which detection
is which object. This module does, from masks alone, as Grounded-SAM-2's `MaskDictionaryModel` (which
the paper's pipeline follows) does:

- forward, frame by frame: the objects already tracked are propagated to the frame first; each
  detection is matched to the propagated mask it overlaps most (mask IoU > `match_iou`, one to one,
  best pairs first) and keeps that object's id; a detection that matches none becomes a new object,
  prompted with its box at that frame (its first frame);
- reverse: objects first found late are propagated backwards from their first frame, so they also
  have masks at the frames before they were detected;
- gaps: a late object whose backward masks overlap (IoU > `match_iou`) the last masks of an object
  lost before it appeared is that object coming back: it takes the older id and its masks fill the gap.

An object whose propagated mask is empty is absent at that frame; after more than
`lost_buffer_frames` empty frames in a row it is retired (no longer propagated; it cannot come back
except through the gap rule). The model side is a `Propagator` (SAM2 video in `sam2_video.py`, an
oracle in the tests), so the id logic here is pure numpy and can be tested exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from crashcast.types import Detections

log = logging.getLogger(__name__)

#: `Detections.source` of an object at a frame where no detection confirmed it (propagated by SAM2)
PROPAGATED_SOURCE = "sam2-video"


@dataclass
class Propagated:
    """One object's mask at one frame as the tracker propagated it.

    mask: (H, W) bool at the frame's size; score: the tracker's probability that the object is visible
    there, in [0, 1] (SAM2: the sigmoid of its object-score logit)."""

    mask: np.ndarray
    score: float


class Propagator(Protocol):
    """What the mask dictionary needs from a video tracker over one span (or one stream).

    Object ids are the dictionary's. Every call returns the masks of every object the propagator
    currently tracks at frame `t`; `reverse` says the frames are visited backwards in time."""

    def propagate(self, t: int, reverse: bool = False) -> dict[int, Propagated]:
        """Masks at frame `t` of the tracked objects ({} when there are none)."""
        ...

    def prompt(self, t: int, boxes: Mapping[int, np.ndarray], reverse: bool = False) -> dict[int, Propagated]:
        """Start tracking new objects at frame `t` from their boxes ((4,) xyxy pixels); returns the masks at
        `t` of all tracked objects, the new ones included."""
        ...

    def retire(self, ids: Collection[int]) -> None:
        """Stop tracking these objects."""
        ...


@dataclass(frozen=True)
class DictionarySettings:
    """match_iou: a detection keeps an object's id when its mask overlaps the object's propagated mask by
    more than this (also the overlap that joins a late object to one lost before it);
    new_object_confidence: unmatched detections below this start no object (they are dropped);
    max_objects: at most this many objects are tracked at once (more new ones are dropped, most
    confident first kept); lost_buffer_frames: perceived frames an object may have an empty mask and
    still come back; reverse_max_frames: how far back (perceived frames) a late object is propagated
    (None: to the start of the span)."""

    match_iou: float = 0.5
    new_object_confidence: float = 0.25
    max_objects: int = 32
    lost_buffer_frames: int = 15
    reverse_max_frames: int | None = None


@dataclass
class TrackedObject:
    """One object's record: its masks per frame (frames where it is present), SAM2's visibility score
    per frame, and what detections said about it (class votes, confidences, sources)."""

    track_id: int
    first_frame: int
    prompt_box: np.ndarray
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    presence: dict[int, float] = field(default_factory=dict)
    detected: dict[int, tuple[float, str]] = field(default_factory=dict)
    class_votes: dict[str, int] = field(default_factory=dict)
    class_confidence: dict[str, float] = field(default_factory=dict)
    empty_run: int = 0
    live: bool = True

    def vote(self, t: int, class_name: str, confidence: float, source: str) -> None:
        self.detected[t] = (confidence, source)
        self.class_votes[class_name] = self.class_votes.get(class_name, 0) + 1
        self.class_confidence[class_name] = self.class_confidence.get(class_name, 0.0) + confidence

    @property
    def class_name(self) -> str:
        """The majority class of its detections (ties: the larger summed confidence, then the first seen)."""
        return max(self.class_votes, key=lambda c: (self.class_votes[c], self.class_confidence[c]))

    @property
    def mean_confidence(self) -> float:
        n = sum(self.class_votes.values())
        return sum(self.class_confidence.values()) / n if n else 0.0

    @property
    def last_frame(self) -> int:
        return max(self.masks, default=-1)

    def confidence_at(self, t: int) -> float:
        """The detection's confidence where detected; elsewhere the object's mean detection confidence
        times the tracker's visibility score at that frame (a propagated mask is worth less than a
        detected one, and less still where SAM2 doubts the object is there)."""
        if t in self.detected:
            return self.detected[t][0]
        return self.mean_confidence * self.presence.get(t, 0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) float32 IoU between masks a (n, H, W) and b (m, H, W); 0 where both are empty
    (supervision's `mask_iou_batch`, whose float32 pixel counts and quotients it keeps as float32)."""
    import supervision as sv

    return sv.mask_iou_batch(np.asarray(a, bool), np.asarray(b, bool)).astype(np.float32)


def box_masks(xyxy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(n, H, W) bool: each box filled (pixel edges: floor of the start, ceil of the end)."""
    h, w = shape
    out = np.zeros((len(xyxy), h, w), bool)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(xyxy, np.float32)):
        out[i, int(max(0, y1)): int(min(h, np.ceil(y2))), int(max(0, x1)): int(min(w, np.ceil(x2)))] = True
    return out


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(n, 4) float32 xyxy pixel edges enclosing each mask (n, H, W); zeros for an empty mask."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if len(rows):
            out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def detection_masks(det: Detections, shape: tuple[int, int]) -> np.ndarray:
    """The detections' own masks (a segmenter's), or their boxes filled when they have none."""
    if det.mask is not None and det.mask.shape[1:] == tuple(shape):
        return det.mask
    return box_masks(det.xyxy, shape)


def greedy_match(iou: np.ndarray, threshold: float) -> dict[int, int]:
    """Row -> column, one to one, best IoU first, only pairs above `threshold`."""
    pairs = np.argwhere(iou > threshold)
    order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable") if len(pairs) else []
    rows: dict[int, int] = {}
    taken: set[int] = set()
    for r, c in pairs[order]:
        if int(r) not in rows and int(c) not in taken:
            rows[int(r)] = int(c)
            taken.add(int(c))
    return rows


class MaskDictionary:
    """Global ids over one span (`track`-style: forward, then `reverse_pass` and `join_gaps`) or one
    stream (`step` per frame, then `forget_before` to keep only what is still needed)."""

    def __init__(self, settings: DictionarySettings, shape: tuple[int, int]) -> None:
        self.settings = settings
        self.shape = (int(shape[0]), int(shape[1]))
        self.objects: dict[int, TrackedObject] = {}
        self._next_id = 1

    # ---- forward -------------------------------------------------------------------------------
    def live_ids(self) -> list[int]:
        return [i for i, o in self.objects.items() if o.live]

    def step(self, propagator: Propagator, t: int, det: Detections) -> None:
        """Frame `t` (frames in time order): propagate, match, start new objects, retire lost ones."""
        s = self.settings
        propagated = propagator.propagate(t) if self.live_ids() else {}
        masks = detection_masks(det, self.shape)
        ids = [i for i in self.live_ids() if i in propagated]
        tracked = np.stack([propagated[i].mask for i in ids]) if ids else np.zeros((0, *self.shape), bool)
        iou = mask_iou(masks, tracked) if len(det) and ids else np.zeros((len(det), len(ids)), np.float32)
        matched = {d: ids[c] for d, c in greedy_match(iou, s.match_iou).items()}
        sources = det.source if det.source is not None else np.full(len(det), "sam2", object)

        new: dict[int, int] = {}  # detection index -> new object id
        room = s.max_objects - len(self.live_ids())
        for d in np.argsort(-det.confidence, kind="stable"):
            d = int(d)
            if d in matched:
                continue
            if iou.shape[1] and iou[d].max() > s.match_iou:
                continue  # a second box on an object another detection already claimed
            if det.confidence[d] < s.new_object_confidence:
                continue
            if room <= 0:
                log.debug("frame %d: %d objects tracked, a new detection is dropped", t, s.max_objects)
                continue
            room -= 1
            new[d] = self._next_id
            self.objects[self._next_id] = TrackedObject(self._next_id, t, det.xyxy[d].copy())
            self._next_id += 1
        if new:
            propagated = {**propagated, **propagator.prompt(t, {i: det.xyxy[d] for d, i in new.items()})}

        for d, i in [*matched.items(), *new.items()]:
            self.objects[i].vote(t, str(det.class_name[d]), float(det.confidence[d]), str(sources[d]))
        new_detection = {i: d for d, i in new.items()}
        retire = []
        for i in self.live_ids():
            o, p = self.objects[i], propagated.get(i)
            if p is not None and p.mask.any():
                o.masks[t], o.presence[t], o.empty_run = p.mask, float(p.score), 0
                continue
            if i in new_detection:  # SAM2 saw nothing in the prompt box: the detection's own mask stands
                o.masks[t], o.presence[t], o.empty_run = masks[new_detection[i]], 0.0, 0
                continue
            o.empty_run += 1
            if o.empty_run > s.lost_buffer_frames:
                o.live = False
                retire.append(i)
        if retire:
            propagator.retire(retire)

    # ---- backward ------------------------------------------------------------------------------
    def reverse_pass(self, propagator: Propagator) -> None:
        """Propagate every object first found after the span's first frame backwards from its first
        frame, with `propagator` a fresh one over the same frames (objects are prompted again there)."""
        s = self.settings
        late = {i: o for i, o in self.objects.items() if o.first_frame > 0}
        if not late:
            return
        starts: dict[int, list[int]] = {}
        for i, o in late.items():
            starts.setdefault(o.first_frame, []).append(i)
        live: list[int] = []
        empty_run: dict[int, int] = {}
        for t in range(max(starts), -1, -1):
            starting = starts.get(t, [])
            if not starting and not live:
                if t < min(starts):
                    break
                continue
            if starting:
                results = propagator.prompt(t, {i: late[i].prompt_box for i in starting}, reverse=True)
            else:
                results = propagator.propagate(t, reverse=True)
            done = []
            for i in live:  # objects whose first frame is after t
                o, p = late[i], results.get(i)
                if p is not None and p.mask.any():
                    o.masks[t], o.presence[t], empty_run[i] = p.mask, float(p.score), 0
                else:
                    empty_run[i] += 1
                beyond = s.reverse_max_frames is not None and o.first_frame - t >= s.reverse_max_frames
                if empty_run[i] > s.lost_buffer_frames or beyond:
                    done.append(i)
            for i in starting:
                empty_run[i] = 0
            live = [i for i in live if i not in done] + starting
            if done:
                propagator.retire(done)

    def join_gaps(self) -> None:
        """A late object whose backward masks overlap the last masks of an object lost before it appeared
        is that object coming back: merge it into the older id, its masks filling the gap."""
        for b in sorted((o for o in self.objects.values() if o.first_frame > 0), key=lambda o: o.first_frame):
            best, best_iou = None, self.settings.match_iou
            for a in self.objects.values():
                if a is b or a.first_frame >= b.first_frame or not a.masks or a.last_frame >= b.first_frame:
                    continue
                common = [t for t in b.masks if t in a.masks]
                if not common:
                    continue
                t = max(common)  # the frame nearest the gap
                iou = float(mask_iou(a.masks[t][None], b.masks[t][None])[0, 0])
                if iou > best_iou:
                    best, best_iou = a, iou
            if best is None:
                continue
            cut = best.last_frame
            for t, m in b.masks.items():
                if t > cut:
                    best.masks[t], best.presence[t] = m, b.presence[t]
            best.detected.update(b.detected)
            for c, n in b.class_votes.items():
                best.class_votes[c] = best.class_votes.get(c, 0) + n
                best.class_confidence[c] = best.class_confidence.get(c, 0.0) + b.class_confidence[c]
            best.live, best.empty_run = b.live, b.empty_run
            log.debug("object %d (first seen at frame %d) continues object %d (IoU %.2f)", b.track_id,
                      b.first_frame, best.track_id, best_iou)
            del self.objects[b.track_id]

    # ---- output --------------------------------------------------------------------------------
    def frame(self, t: int) -> Detections:
        """The objects present at frame `t` (non-empty mask), by id: box from the mask, majority class,
        confidence (see `TrackedObject.confidence_at`), source (the detector's, or `PROPAGATED_SOURCE`)."""
        present = sorted(i for i, o in self.objects.items() if t in o.masks)
        if not present:
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, object),
                              np.zeros((0, *self.shape), bool), np.zeros(0, np.int64), np.zeros(0, object))
        objs = [self.objects[i] for i in present]
        masks = np.stack([o.masks[t] for o in objs])
        return Detections(
            mask_boxes(masks),
            np.array([o.confidence_at(t) for o in objs], np.float32),
            np.array([o.class_name for o in objs], object),
            masks,
            np.array(present, np.int64),
            np.array([o.detected[t][1] if t in o.detected else PROPAGATED_SOURCE for o in objs], object),
        )

    def forget_before(self, t: int) -> None:
        """Streaming: drop masks and per-frame records older than `t`, and retired objects."""
        for i in [i for i, o in self.objects.items() if not o.live]:
            del self.objects[i]
        for o in self.objects.values():
            for d in (o.masks, o.presence, o.detected):
                for k in [k for k in d if k < t]:
                    del d[k]
