"""Report figures: PNG bytes, drawn without touching matplotlib's global backend or pyplot's figures."""

from __future__ import annotations

import sys

import matplotlib
import numpy as np

from crashcast.evaluation import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _all_figures() -> list[bytes]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = np.clip(0.4 * y + rng.uniform(0, 0.6, 50), 0, 1)
    curves = {"a": (y, s), "b": (y, 1 - s)}
    t = np.linspace(0, 4, 9)
    fig, ax = plots._fig(3.0, 2.0)
    ax.plot([0, 1], [0, 1])
    return [plots._png(fig), plots.reliability(curves), *plots.pr_roc(curves), plots.score_distribution("a", y, s),
            plots.risk_curves([("v1", t, t / 4, 4.0, 2.5), ("v2", t, 1 - t / 4, None, None)], "risk")]


def test_plots_leave_the_callers_backend_alone():
    before = matplotlib.get_backend()
    figures_before = sys.modules["matplotlib.pyplot"].get_fignums() if "matplotlib.pyplot" in sys.modules else None
    try:
        matplotlib.use("svg")  # a non-interactive backend other than Agg, available headless
        pngs = _all_figures()
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert all(p.startswith(PNG) and len(p) > 1000 for p in pngs)
    if figures_before is not None:  # nothing was left open in pyplot's figure manager
        assert sys.modules["matplotlib.pyplot"].get_fignums() == figures_before


def test_figure_size_follows_fig_arguments():
    import cv2

    fig, ax = plots._fig(3.0, 2.0)
    ax.plot([0, 1], [1, 0])
    img = cv2.imdecode(np.frombuffer(plots._png(fig), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (200, 300)  # 100 dpi
