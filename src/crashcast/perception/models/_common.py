"""What several model backends share: the check of the frames a detector is given, and the loading of a
transformers model with its processor (a hub id, a local folder, or `random:<arch>`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from crashcast.errors import ConfigError
from crashcast.perception.spec import BuildContext
from crashcast.runtime.weights import RANDOM_PREFIX, is_random


def check_rgb_frames(frames: Sequence[np.ndarray], backend: str) -> None:
    """Raise ValueError unless every frame is (H, W, 3) uint8 (crashcast frames are RGB)."""
    for i, f in enumerate(frames):
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"{backend}: frames must be (H, W, 3) uint8 RGB, got {f.shape} {f.dtype} (frame {i})")


def load_pretrained(
    weights: str,
    ctx: BuildContext,
    model_class: str,
    processor_class: str,
    random_model: Callable[[str], tuple[Any, Any]],
    setting: str,
) -> tuple[Any, Any]:
    """(model, processor): `random_model(arch)` for `random:<arch>`, else transformers' `model_class` and
    `processor_class` (names, e.g. "Sam2Model", "Sam2Processor") from the hub id or folder `weights`
    (where `ctx.weights` finds it). A snapshot that cannot be loaded is a ConfigError naming `setting`
    (the config field, e.g. "perception.segmenter.weights") and what to do."""
    if is_random(weights):
        return random_model(weights[len(RANDOM_PREFIX) :])
    import transformers

    path = ctx.weights(weights)
    try:
        processor = getattr(transformers, processor_class).from_pretrained(path)
        model = getattr(transformers, model_class).from_pretrained(path)
    except (OSError, ValueError) as e:  # not on the hub cache / offline / not a snapshot of this model
        raise ConfigError(
            f"{setting}: cannot load {weights!r} ({type(e).__name__}: {e}). "
            "Offline, put the hub snapshot in the weights folder (`crashcast weights list`) or give its path"
        ) from e
    return model, processor
