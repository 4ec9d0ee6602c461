"""Report figures drawn with matplotlib's object-oriented API (a `Figure` on an Agg canvas), returned
as PNG bytes. No pyplot and no `matplotlib.use`: the caller's backend (a notebook's, say) is left
alone and no figure is registered globally, so nothing needs closing.
"""

from __future__ import annotations

import io

import numpy as np


def _fig(w: float = 4.2, h: float = 3.4):
    """A (figure, axes) pair of w x h inches at 100 dpi, on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    """The figure, laid out tightly, as PNG bytes."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> bytes:
    """Mean label vs mean score per equal-width bin, one line per model."""
    fig, ax = _fig()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for name, (y, s) in curves.items():
        idx = np.minimum((np.asarray(s) * bins).astype(int), bins - 1)
        xs, ys = [], []
        for b in range(bins):
            m = idx == b
            if m.any():
                xs.append(np.mean(np.asarray(s)[m]))
                ys.append(np.mean(np.asarray(y)[m]))
        ax.plot(xs, ys, "o-", label=name, ms=4)
    ax.set(xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1), title="Reliability")
    ax.legend(fontsize=7)
    return _png(fig)


def pr_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[bytes, bytes]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig1, ax1 = _fig()
    fig2, ax2 = _fig()
    for name, (y, s) in curves.items():
        if len(np.unique(y)) < 2:
            continue
        p, r, _ = precision_recall_curve(y, s)
        ax1.step(r, p, where="post", label=name)
        fpr, tpr, _ = roc_curve(y, s)
        ax2.plot(fpr, tpr, label=name)
    ax1.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall")
    ax2.plot([0, 1], [0, 1], "k--", lw=1)
    ax2.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return _png(fig1), _png(fig2)


def score_distribution(name: str, y: np.ndarray, s: np.ndarray) -> bytes:
    fig, ax = _fig(4.2, 2.8)
    bins = np.linspace(0, 1, 21)
    ax.hist(np.asarray(s)[np.asarray(y) == 0], bins=bins, alpha=0.6, label="negative windows")
    ax.hist(np.asarray(s)[np.asarray(y) == 1], bins=bins, alpha=0.6, label="positive windows")
    ax.set(xlabel="score", ylabel="windows", title=f"Scores by class: {name}")
    ax.legend(fontsize=7)
    return _png(fig)


def risk_curves(series: list[tuple[str, np.ndarray, np.ndarray, float | None, float | None]], title: str) -> bytes:
    """Risk over time relative to the event, per video: (label, times, scores, event_s, alert_s)."""
    fig, ax = _fig(6.0, 3.4)
    for label, t, s, event, alert in series:
        t0 = event if event is not None else (t.max() if len(t) else 0.0)
        line = ax.plot(np.asarray(t) - t0, s, "o-", ms=3, label=label)
        if alert is not None and event is not None:
            ax.axvline(alert - event, color=line[0].get_color(), ls=":", lw=1)
    ax.axvline(0, color="k", lw=1)
    ax.set(xlabel="seconds relative to the event (dotted: alert time)", ylabel="risk", ylim=(-0.02, 1.02), title=title)
    ax.legend(fontsize=6, ncol=2)
    return _png(fig)
