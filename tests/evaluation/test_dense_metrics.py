"""Dense per-video metrics (crashcast.evaluation.dense) against hand computations on small timelines:
the field's AP / mTTA / TTA@R80, the false-alarm-capped recall and time to alert, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crashcast.evaluation import dense as D
from crashcast.evaluation.metrics import VideoScores, video_ap_tta
from crashcast.risk.alerts import POLICIES, create_policy


def tl(cid, times, scores, event=None):
    return D.DenseTimeline(cid, np.array(times, float), np.array(scores, float), event)


# Example A. P1's stride at 2.0 is AT its event (a window that has seen the collision): not kept.
# P3 has no stride before its event (1.0): a positive never detected.
EXAMPLE_A = [
    tl("P1", [0.5, 1.0, 1.5, 2.0], [0.2, 0.6, 0.9, 0.95], event=2.0),
    tl("P2", [0.5, 1.0, 1.5], [0.7, 0.3, 0.4], event=3.0),
    tl("P3", [1.0, 2.0], [0.5, 0.8], event=1.0),
    tl("N1", [0.5, 1.0], [0.1, 0.6]),
    tl("N2", [0.5, 1.0], [0.3, 0.2]),
]


def test_field_metrics_by_hand_example_a():
    # kept maxima: P1 0.9, P2 0.7, N1 0.6, N2 0.3; 3 positives; thresholds = distinct kept scores
    # th   flagged  TP  P1 first (TTA)   P2 first (TTA)  mean TTA  precision  recall
    # 0.1  4        2   0.5 (1.5)        0.5 (2.5)       2.0       2/4        2/3
    # 0.2  4        2   0.5 (1.5, tie)   0.5 (2.5)       2.0       2/4        2/3
    # 0.3  4 (N2 tie) 2 1.0 (1.0)        0.5 (2.5)       1.75      2/4        2/3
    # 0.4  3        2   1.0 (1.0)        0.5 (2.5)       1.75      2/3        2/3
    # 0.6  3 (N1 tie) 2 1.0 (1.0)        0.5 (2.5)       1.75      2/3        2/3
    # 0.7  2        2   1.5 (0.5)        0.5 (2.5)       1.5       1          2/3
    # 0.9  1        1   1.5 (0.5)        -               0.5       1          1/3
    # levels: 1/3 -> best precision 1, best TTA 0.5; 2/3 -> best precision 1, best TTA 2.0
    # AP = 1 * 1/3 + (1 + 1) / 2 * (2/3 - 1/3) = 2/3; mTTA = (0.5 + 2.0) / 2 = 1.25
    # TTA@R80: the level nearest 0.8 is 2/3 (|2/3 - 0.8| = 0.13 < 0.47): 2.0; no level reaches 0.8
    r = D.field_ap_tta(EXAMPLE_A)
    assert r["ap"] == pytest.approx(2 / 3)
    assert r["mtta_s"] == pytest.approx(1.25)
    assert r["tta_r80_s"] == pytest.approx(2.0)
    assert math.isnan(r["tta_at_r80_s"]) and math.isnan(r["precision_at_r80"])
    assert (r["positives"], r["negatives"], r["positives_without_stride"]) == (3, 2, 1)
    assert r["curve"]["recall"] == pytest.approx([1 / 3, 2 / 3])
    assert r["curve"]["precision"] == pytest.approx([1.0, 1.0])
    assert r["curve"]["tta_s"] == pytest.approx([0.5, 2.0])


def test_field_metrics_by_hand_example_b():
    # P1 (event 4): 0.3@1 0.8@2 0.5@3; P2 (event 2.5): 0.6@1 0.2@2; N1: 0.7@1 0.1@2
    # th       flagged  TP  TTAs        mean   precision  recall
    # 0.1-0.3  3        2   3.0, 1.5    2.25   2/3        1
    # 0.5-0.6  3        2   2.0, 1.5    1.75   2/3        1
    # 0.7      2 (P1,N1) 1  2.0         2.0    1/2        1/2
    # 0.8      1        1   2.0         2.0    1          1/2
    # levels: 1/2 -> precision 1, TTA 2.0; 1 -> precision 2/3, TTA 2.25
    # AP = 1 * 0.5 + (1 + 2/3) / 2 * 0.5 = 11/12; mTTA = (2.0 + 2.25) / 2 = 2.125
    # TTA@R80: nearest level 1 (0.2 < 0.3): 2.25; lowest level >= 0.8 is 1: TTA 2.25, precision 2/3
    r = D.field_ap_tta([tl("P1", [1, 2, 3], [0.3, 0.8, 0.5], 4.0), tl("P2", [1, 2], [0.6, 0.2], 2.5),
                        tl("N1", [1, 2], [0.7, 0.1])])
    assert r["ap"] == pytest.approx(11 / 12)
    assert r["mtta_s"] == pytest.approx(2.125)
    assert r["tta_r80_s"] == pytest.approx(2.25)
    assert r["tta_at_r80_s"] == pytest.approx(2.25)
    assert r["precision_at_r80"] == pytest.approx(2 / 3)


def test_field_metrics_nearest_level_can_lie_below_80_percent():
    # 4 positives whose maxima are 0.9, 0.8, 0.7 and 0.1 (below the negative's 0.5): levels 1/4,
    # 2/4, 3/4 and 1. Nearest 0.8 is 3/4 (0.05 < 0.2): the field's TTA@R80 is read at 75 % recall;
    # the lowest level reaching 80 % is 1. TTAs (event 5, each positive's one stride at t):
    # P1 0.9@4 (1.0), P2 0.8@3 (2.0), P3 0.7@2 (3.0), P4 0.1@1 (4.0)
    # level 3/4 (th 0.7): mean (1 + 2 + 3) / 3 = 2.0; level 1 (th 0.1): mean (1+2+3+4)/4 = 2.5
    # precision at level 1: 4 positives of 5 flagged = 0.8
    r = D.field_ap_tta([tl("P1", [4], [0.9], 5.0), tl("P2", [3], [0.8], 5.0), tl("P3", [2], [0.7], 5.0),
                        tl("P4", [1], [0.1], 5.0), tl("N", [1], [0.5])])
    assert r["tta_r80_s"] == pytest.approx(2.0)
    assert r["tta_at_r80_s"] == pytest.approx(2.5)
    assert r["precision_at_r80"] == pytest.approx(0.8)


def test_field_metrics_edge_cases():
    no_pos = D.field_ap_tta([tl("N1", [1, 2], [0.3, 0.9])])
    assert all(math.isnan(no_pos[k]) for k in ("ap", "mtta_s", "tta_r80_s")) and no_pos["positives"] == 0
    # the only positive has no stride before its event: never detected, AP 0, no time
    never = D.field_ap_tta([tl("P", [2, 3], [0.9, 0.9], 1.5), tl("N", [1], [0.2])])
    assert never["ap"] == 0.0 and math.isnan(never["mtta_s"]) and never["positives_without_stride"] == 1
    assert math.isnan(D.field_ap_tta([])["ap"])


def test_field_metrics_equal_the_window_end_metric_where_no_stride_is_at_an_event():
    """On timelines where no stride falls on an event, `video_ap_tta` (the window-end metric, which
    keeps strides up to the event) and the dense one keep the same strides: same AP, mTTA, TTA@R80."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        vids, tls = [], []
        for i in range(rng.integers(3, 9)):
            n = int(rng.integers(1, 8))
            t = np.arange(1, n + 1) * 0.5
            s = np.round(rng.uniform(0, 1, n), 1)  # rounded: ties between videos and strides
            event = float(rng.choice([0.25, 1.25, 2.75, 9.75])) if i % 2 else None
            vids.append(VideoScores(t, s, int(event is not None), event))
            tls.append(tl(f"v{i}", t, s, event))
        if not any(v.label for v in vids):
            continue
        old, new = video_ap_tta(vids), D.field_ap_tta(tls)
        assert new["ap"] == pytest.approx(old["video_ap"])
        if np.isfinite(new["mtta_s"]):
            assert new["mtta_s"] == pytest.approx(old["mtta_s"])
            assert new["tta_r80_s"] == pytest.approx(old["tta_r80_s"])


# ----------------------------------------------------------------------------- the share cap

# P1 (event 4): 0.3@1 0.8@2 0.5@3; P2 (event 2.5): 0.6@1 0.2@2; ten negatives: maxima 0.7, 0.4, eight 0.1
CAPPED = [tl("P1", [1, 2, 3], [0.3, 0.8, 0.5], 4.0), tl("P2", [1, 2], [0.6, 0.2], 2.5),
          tl("N1", [1, 2], [0.7, 0.1]), tl("N2", [1, 2], [0.4, 0.2]),
          *[tl(f"N{i}", [1], [0.1]) for i in range(3, 11)]]


def test_share_cap_by_hand():
    # negatives alarmed at th: 0.1 -> 10; 0.2-0.4 -> 2 (N1, N2); 0.5-0.7 -> 1 (N1); 0.8 -> 0
    # 10 % of 10 negatives: at most 1 -> the lowest such threshold is 0.5 (a distinct score)
    # at 0.5: P1 first >= 0.5 at t=2 (TTA 2.0), P2 at t=1 (TTA 1.5): recall 1, mean (2 + 1.5) / 2 = 1.75
    r = D.capped_by_share(CAPPED, 0.1)
    assert r["threshold"] == pytest.approx(0.5)
    assert (r["recall"], r["detected"], r["false_alarms"], r["negatives"]) == (1.0, 2, 1, 10)
    assert r["mean_time_to_alert_s"] == pytest.approx(1.75)
    assert r["false_alarm_share"] == pytest.approx(0.1)
    # no false alarm allowed (0 %, or 5 % of 10 = 0.5 -> 0): threshold 0.8, only P1 (TTA 2.0)
    for cap in (0.0, 0.05):
        r0 = D.capped_by_share(CAPPED, cap)
        assert r0["threshold"] == pytest.approx(0.8)
        assert (r0["recall"], r0["false_alarms"]) == (0.5, 0)
        assert r0["mean_time_to_alert_s"] == pytest.approx(2.0)


def test_share_cap_ties_and_nothing_fits():
    # the negative's maximum ties the positive's: at 0.6 both alarm; with no false alarm allowed only
    # 'never' fits: no threshold, recall 0, no time
    r = D.capped_by_share([tl("P", [1], [0.6], 2.0), tl("N", [1], [0.6])], 0.0)
    assert r["threshold"] is None and r["recall"] == 0.0 and math.isnan(r["mean_time_to_alert_s"])
    # no negatives: nothing to cap
    r = D.capped_by_share([tl("P", [1], [0.6], 2.0)], 0.1)
    assert r["threshold"] is None and math.isnan(r["recall"]) and math.isnan(r["false_alarm_share"])
    # a negative without a stride cannot alarm and is not counted in the share
    r = D.capped_by_share([tl("P", [1], [0.6], 2.0), tl("N", [1], [0.3]), tl("E", [], [])], 0.0)
    assert (r["negatives"], r["negatives_without_stride"], r["threshold"]) == (1, 1, pytest.approx(0.6))
    with pytest.raises(ValueError):
        D.capped_by_share(CAPPED, 1.5)


# ----------------------------------------------------------------------------- the per-hour cap with the policy

# stride 0.5 s; negatives: 5 + 3 strides = 4 s = 1/900 h of footage
PER_HOUR = [tl("P1", [0.5, 1.0, 1.5, 2.0], [0.3, 0.9, 0.5, 0.95], 2.0),  # 0.95 at the event: not kept
            tl("P2", [0.5, 1.0, 1.5], [0.1, 0.5, 0.8], 1.6),
            tl("N1", [0.5, 1.0, 1.5, 2.0, 2.5], [0.2, 0.7, 0.3, 0.7, 0.1]),
            tl("N2", [0.5, 1.0, 1.5], [0.4, 0.4, 0.1])]


def test_per_hour_cap_raw_policy_by_hand():
    # policy none: alert while raw >= th. Onsets on N1 / N2 (total):
    #   th 0.1-0.3: 1 / 1 (2); 0.4: 2 (0.3 splits N1's episode) / 1 (3); 0.5-0.7: 2 / 0 (2); 0.8-0.9: 0
    none = create_policy("none", 0.5)
    # 1 / h of 1/900 h allows 0 false alarms: threshold 0.8; P1 first >= 0.8 at 1.0 (TTA 1.0),
    # P2 at 1.5 (TTA 0.1): recall 1, mean 0.55
    r = D.capped_per_hour(PER_HOUR, none, 0.5, 1.0)
    assert r["threshold"] == pytest.approx(0.8) and r["recall"] == 1.0 and r["false_alarms"] == 0
    assert r["mean_time_to_alert_s"] == pytest.approx(0.55)
    assert r["negative_hours"] == pytest.approx(1 / 900)
    # 1800 / h allows 2: 0.1-0.3 are within but 0.4 (3) is not, so the lowest threshold from which on
    # every higher one is within is 0.5; P1 first >= 0.5 at 1.0 (TTA 1.0), P2 at 1.0 (TTA 0.6): mean 0.8
    r = D.capped_per_hour(PER_HOUR, none, 0.5, 1800.0)
    assert r["threshold"] == pytest.approx(0.5) and r["false_alarms"] == 2
    assert r["false_alarms_per_hour"] == pytest.approx(1800.0)
    assert r["mean_time_to_alert_s"] == pytest.approx(0.8)


def test_per_hour_cap_hysteresis_by_hand():
    # hysteresis, off 0.5: on at raw >= th, stays on while raw >= 0.5 th. Thresholds where it can
    # change: raw r and r / 0.5 up to the top raw 0.9: 0.1 ... 0.9. Onsets N1 [.2 .7 .3 .7 .1]:
    #   0.1-0.6: 1 (at 0.6 the 0.3 stays on: 0.3 >= 0.3); 0.7: 2 (0.3 < 0.35 ends it); 0.8+: 0
    # N2 [.4 .4 .1]: 1 up to 0.4, then 0. Totals: 0.1-0.4: 2, 0.5-0.6: 1, 0.7: 2, 0.8+: 0
    hyst = create_policy("hysteresis", 0.5, off=0.5)
    # 900 / h allows 1: 0.5 and 0.6 are within but 0.7 is not -> 0.8 (P1 TTA 1.0, P2 TTA 0.1)
    r = D.capped_per_hour(PER_HOUR, hyst, 0.5, 900.0)
    assert r["threshold"] == pytest.approx(0.8) and r["false_alarms"] == 0
    assert r["mean_time_to_alert_s"] == pytest.approx(0.55)
    # 1800 / h allows 2: everything from 0.1: P1 on at 0.5 (TTA 1.5), P2 at 0.5 (TTA 1.1): mean 1.3
    r = D.capped_per_hour(PER_HOUR, hyst, 0.5, 1800.0)
    assert r["threshold"] == pytest.approx(0.1) and r["false_alarms"] == 2
    assert r["mean_time_to_alert_s"] == pytest.approx(1.3)
    # at the policy's own threshold 0.5: N1 1 onset, N2 none -> 1 in 1/900 h = 900 / h;
    # P1 on at 1.0 (TTA 1.0), P2 at 1.0 (0.5 >= 0.5; TTA 0.6): mean 0.8
    a = D.at_threshold(PER_HOUR, hyst, 0.5)
    assert (a["threshold"], a["false_alarms"], a["recall"]) == (0.5, 1, 1.0)
    assert a["false_alarms_per_hour"] == pytest.approx(900.0)
    assert a["mean_time_to_alert_s"] == pytest.approx(0.8)


def test_per_hour_cap_edges():
    none = create_policy("none", 0.5)
    r = D.capped_per_hour([tl("P", [1], [0.6], 2.0)], none, 0.5)  # no negative footage
    assert r["threshold"] is None and math.isnan(r["recall"]) and math.isnan(r["false_alarms_per_hour"])
    r = D.capped_per_hour([tl("N", [1], [0.6])], none, 0.5)  # no positives
    assert math.isnan(r["recall"])
    # every positive below a negative that may not alarm: only 'never' fits
    r = D.capped_per_hour([tl("P", [1], [0.5], 2.0), tl("N", [1], [0.6])], none, 0.5, 0.0)
    assert r["threshold"] is None and r["recall"] == 0.0
    with pytest.raises(ValueError):
        D.capped_per_hour(PER_HOUR, none, 0.0)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_alert_matrix_is_the_policy_applied_stride_by_stride(name):
    """The vectorised sweep gives, at every threshold, exactly the alerts of `policy.apply`."""
    import dataclasses

    rng = np.random.default_rng(5)
    policy = create_policy(name, 0.5)
    for _ in range(5):
        raw = np.round(rng.uniform(0, 1, int(rng.integers(1, 30))), 1)  # ties with the thresholds
        ths = np.r_[np.round(np.linspace(0, 1, 21), 2), np.inf]
        got = D.alert_matrix(policy, raw, ths)
        for th, row in zip(ths, got, strict=True):
            want = [False] * len(raw) if np.isinf(th) else \
                [a.alert for a in dataclasses.replace(policy, threshold=float(th)).apply(raw)]
            assert row.tolist() == want, (name, th)


def test_dense_metrics_bundle_and_timelines_round_trip(tmp_path):
    none = create_policy("none", 0.5)
    with_empty = [*EXAMPLE_A, tl("E", [], [])]
    path = tmp_path / "timelines.csv"
    D.timelines_table(with_empty).to_csv(path, index=False)
    back = D.read_timelines(path)
    assert [t.clip_id for t in back] == [t.clip_id for t in with_empty]
    for a, b in zip(back, with_empty, strict=True):
        assert a.event_s == b.event_s and np.array_equal(a.times_s, b.times_s) and np.array_equal(a.scores, b.scores)
    m = D.dense_metrics(back, none, 0.5)
    assert D.json_safe(m["field"]) == D.json_safe(D.field_ap_tta(with_empty))  # NaN != NaN: compared as null
    assert D.json_safe(m["at_false_alarm_share"]) == D.json_safe(D.capped_by_share(with_empty, 0.1))
    results = {"models": {"physics": {"stride_s": 0.5, "metrics": m}}}
    text = D.dense_markdown(results)
    assert "| physics | 6 (3/3) | 0.5 | 66.7 | 1.25 | 2.00 | n/a |" in text
    said = D.explain_dense(results)
    # 1 / h over 3 negatives x 2 strides x 0.5 s = 3 s of footage allows none; the lowest threshold where
    # N1 (top 0.6) no longer alerts is 0.7: P1 (0.9 at 1.5, TTA 0.5) and P2 (0.7 at 0.5, TTA 2.5): mean 1.5
    assert "mTTA 1.25 s; allowing at most 1 false alarm per hour of normal driving it warns on 66.7 % of the " \
           "crashes, 1.50 s ahead on average." in said
    assert "holds 2 s of negative footage: one false alarm there is 1800 per hour" in said and "crashcast dense" in D.explain_window_video_metrics()
    assert "NaN" not in D.dumps(results)


def test_results_read_back_from_json_explain_and_report_and_ids_stay_as_written(tmp_path):
    """A second model's write reads the first one's entry back from dense_metrics.json, where NaN is
    null: the explanation and the report take it; a clip id such as "NA" stays an id; an empty file
    gives no report table; the per-hour sentence appears only when one false alarm breaks the cap."""
    none = create_policy("none", 0.5)
    positives_only = [tl("NA", [0.5, 1.0], [0.2, 0.9], event=2.0), tl("null", [0.5, 1.0], [0.7, 0.1], event=3.0)]
    D.write_results(tmp_path, "m1", positives_only, {}, none, 0.5)
    results = D.write_results(tmp_path, "m2", EXAMPLE_A, {}, none, 0.5)
    assert results["models"]["m1"]["metrics"]["at_false_alarms_per_hour"]["recall"] is None  # NaN as JSON null
    said = D.explain_dense(results)
    assert "m1: mTTA" in said and "no capped figure" in said
    back = D.read_timelines(tmp_path / "dense" / "m1" / "timelines.csv")
    assert [t.clip_id for t in back] == ["NA", "null"]
    assert D.report_table({"models": {}}) is None
    assert D.report_table(results)["rows"][0]["name"] == "m1"
    # 2 s of negative footage: one false alarm is 1800 per hour; under a 2000 per hour cap it is allowed
    loose = D.dense_metrics(EXAMPLE_A, none, 0.5, max_per_hour=2000.0)
    assert "allows none" not in D.explain_dense({"models": {"m": {"stride_s": 0.5, "metrics": loose}}})
