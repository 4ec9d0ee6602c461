"""crashcast: collision-risk anticipation from dashcam video.

`import crashcast` is light (no torch); heavy stages import their libraries when used. The library
functions are in `crashcast.api`; those whose names are not also a submodule's (`crashcast.extract`,
`crashcast.doctor`, `crashcast.prompts` are modules) are reachable from here, imported on first use:

    >>> import crashcast
    >>> p = crashcast.predict("drive.mp4")
    >>> summary = crashcast.api.extract("train.csv", "run", backend="classic")
"""

from __future__ import annotations

from typing import Any

from crashcast.version import __version__

#: `crashcast.<name>` is `crashcast.api.<name>`, imported when first used
API = ("build_windows", "config_for", "download_weights", "evaluate", "load_clips", "predict_many", "report", "synth",
       "train", "watch", "windows")


def predict(*args: Any, **kwargs: Any) -> Any:
    """Risk timeline of a video; see `crashcast.api.predict` (and `crashcast.prediction.predict`)."""
    from crashcast.api import predict as _predict

    return _predict(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "api":
        import importlib

        return importlib.import_module("crashcast.api")
    if name in API:
        from crashcast import api

        return getattr(api, name)
    raise AttributeError(f"module 'crashcast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "api", *API])


__all__ = ["__version__", "api", "predict", *API]
