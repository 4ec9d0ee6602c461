from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from crashcast.evaluation import metrics as M


@pytest.fixture(params=range(5))
def data(request):
    rng = np.random.default_rng(request.param)
    n = 200
    y = rng.integers(0, 2, n)
    s = np.clip(0.3 * y + rng.normal(0.4, 0.25, n), 0, 1)
    if request.param % 2:  # ties
        s = np.round(s, 1)
    return y, s


def test_threshold_metrics_match_sklearn(data):
    y, s = data
    p, r, f = M.precision_recall_f1(y, s, 0.5)
    pred = (s >= 0.5).astype(int)
    assert p == pytest.approx(sk.precision_score(y, pred, zero_division=0), abs=1e-9)
    assert r == pytest.approx(sk.recall_score(y, pred, zero_division=0), abs=1e-9)
    assert f == pytest.approx(sk.f1_score(y, pred, zero_division=0), abs=1e-9)


def test_ranking_and_error_metrics_match_sklearn(data):
    y, s = data
    assert M.average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s), abs=1e-9)
    assert M.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-9)
    assert M.brier(y, s) == pytest.approx(sk.brier_score_loss(y, s), abs=1e-9)
    assert M.mae(y, s) == pytest.approx(sk.mean_absolute_error(y, s), abs=1e-9)


def test_ece_hand_example():
    # bins of width 0.5: [0.2, 0.4] mean 0.3 vs labels 0,1 -> 0.5; [0.6, 1.0] mean 0.8 vs 1,1 -> 1.0
    y = [0, 1, 1, 1]
    s = [0.2, 0.4, 0.6, 1.0]
    assert M.ece(y, s, bins=2) == pytest.approx((2 * abs(0.5 - 0.3) + 2 * abs(1.0 - 0.8)) / 4)
    assert M.ece([1, 1], [1.0, 1.0], bins=10) == 0.0
    # adaptive: 2 equal-count bins give the same here
    assert M.ece(y, s, bins=2, adaptive=True) == pytest.approx(0.2)


def test_video_ap_and_tta_on_a_hand_example():
    # two positives (event at 5 s), one negative; scores at t = 2, 3, 4, 5
    t = np.array([2.0, 3.0, 4.0, 5.0])
    vids = [
        M.VideoScores(t, np.array([0.1, 0.6, 0.9, 0.9]), 1, 5.0),  # reaches 0.6 at 3 s, 0.9 at 4 s
        M.VideoScores(t, np.array([0.1, 0.2, 0.3, 0.7]), 1, 5.0),  # reaches 0.7 at 5 s
        M.VideoScores(t, np.array([0.1, 0.1, 0.65, 0.1]), 0, None),  # false alarm at 0.65
    ]
    out = M.video_ap_tta(vids)
    # thresholds: 0.9 -> recall .5, prec 1, TTA 1; 0.7 -> recall 1, prec 1, TTA (2+0)/2 = 1;
    # 0.65 -> recall 1, prec 2/3; 0.6 -> recall 1 ... ; best per recall: r=.5 (p=1, tta 1), r=1 (p=1, tta max)
    # thresholds <= 0.6 give TTA (2 + 0)/2 = 1 ... at 0.3: (3 + 1)/2 = 2; at 0.2: (3 + 2)/2 = 2.5; 0.1: (3+3)/2 = 3
    assert out["video_ap"] == pytest.approx(0.5 * 1.0 + 0.5 * (1.0 + 1.0) / 2)
    assert out["mtta_s"] == pytest.approx((1.0 + 3.0) / 2)
    assert out["tta_r80_s"] == pytest.approx(3.0)


def test_scores_after_the_event_do_not_count():
    t = np.array([4.0, 6.0])
    vids = [M.VideoScores(t, np.array([0.1, 0.99]), 1, 5.0), M.VideoScores(t, np.array([0.5, 0.5]), 0)]
    out = M.video_ap_tta(vids)
    assert out["video_ap"] < 1.0
    # the positive keeps 0.1 (t=4 s), the negative scores 0.5: th 0.5 flags only the negative (recall
    # 0: no point, as UString/DSTA), th 0.1 flags both (recall 1, precision 1/2): AP = 1/2 * 1
    assert out["video_ap"] == pytest.approx(0.5)


def test_nexar_map_averages_ap_over_horizons():
    y = [1, 1, 0, 0]
    by_h = {0.5: (y, [0.9, 0.8, 0.1, 0.2]), 1.0: (y, [0.9, 0.1, 0.8, 0.2]), 1.5: (y, [0.1, 0.2, 0.9, 0.8])}
    expected = np.mean([sk.average_precision_score(y, s) for _, s in by_h.values()])
    assert M.nexar_map(by_h) == pytest.approx(expected, abs=1e-9)


def test_bootstrap_interval_contains_the_estimate_and_resamples_videos():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"v{i}" for i in range(40)], 3)
    y = np.repeat(rng.integers(0, 2, 40), 3)
    s = np.clip(0.4 * y + rng.normal(0.3, 0.2, len(y)), 0, 1)
    lo, hi = M.bootstrap_ci(groups, lambda idx: M.average_precision(y[idx], s[idx]), n=200)
    est = M.average_precision(y, s)
    assert lo <= est <= hi and hi - lo > 0.01
