"""crashcast: collision-risk anticipation from dashcam video.

`import crashcast` is light (no torch); heavy stages import their libraries when used.
"""

from __future__ import annotations

from typing import Any

from crashcast.version import __version__


def predict(*args: Any, **kwargs: Any) -> Any:
    """Risk timeline of a video; see `crashcast.prediction.predict`."""
    from crashcast.prediction import predict as _predict

    return _predict(*args, **kwargs)


__all__ = ["__version__", "predict"]
