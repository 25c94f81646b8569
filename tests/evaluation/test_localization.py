import json

import numpy as np
import pytest

from p3d.evaluation.localization import (
    TIOU_THRESHOLDS,
    GroundTruth,
    average_precision_classification,
    average_precision_detection,
    detect_segments,
    evaluate_detection,
    evaluate_video_classification,
    hit_at_k,
    pool_window_scores,
    read_detections,
    read_ground_truth,
    smooth_scores,
    temporal_iou,
    temporal_nms,
    write_classifications,
    write_detections,
)


# ---------------------------------------------------------------------------------------------------------
# tIoU and NMS
# ---------------------------------------------------------------------------------------------------------
def test_temporal_iou_hand_cases():
    segs = [[5, 15], [0, 10], [20, 30], [2, 3], [10, 12]]
    # [0,10] vs: [5,15] 5/15; itself 1; disjoint 0; inside 1/10; touching at 10 -> 0
    np.testing.assert_allclose(temporal_iou([0, 10], segs), [1 / 3, 1, 0, 0.1, 0])
    pair = temporal_iou([[0, 10], [4, 6]], [[5, 15], [0, 10]])
    np.testing.assert_allclose(pair, [[1 / 3, 1], [1 / 11, 0.2]])
    assert temporal_iou([0, 10], np.zeros((0, 2))).shape == (0,)
    assert temporal_iou([3, 3], [[3, 3]])[0] == 0.0  # zero-length: union 0 -> 0, not NaN
    with pytest.raises(ValueError, match=r"segments\[1\].*ends before it starts"):
        temporal_iou([0, 1], [[0, 1], [5, 4]])


def test_hard_nms_overlaps_ties_and_empty():
    segs = [[0, 10], [1, 11], [20, 30], [0, 9], [21, 30]]
    # by score: 3 (0.95) suppresses 0 (tIoU 0.9) and 1 (8/11); 2 (0.7) suppresses 4 (0.9)
    keep, kept = temporal_nms(segs, [0.9, 0.8, 0.7, 0.95, 0.6], 0.5)
    assert keep.tolist() == [3, 2] and kept.tolist() == [0.95, 0.7]
    # threshold above every overlap: nothing suppressed, order by score
    keep, _ = temporal_nms(segs, [0.9, 0.8, 0.7, 0.95, 0.6], 0.95)
    assert keep.tolist() == [3, 0, 1, 2, 4]
    # tie: the lower index wins and suppresses the other
    keep, _ = temporal_nms([[0, 10], [0, 10], [50, 60]], [0.5, 0.5, 0.5], 0.5)
    assert keep.tolist() == [0, 2]
    # tIoU exactly at the threshold is kept (suppression needs tIoU > threshold)
    keep, _ = temporal_nms([[0, 10], [5, 15]], [1.0, 0.9], 1 / 3)
    assert keep.tolist() == [0, 1]
    keep, kept = temporal_nms(np.zeros((0, 2)), [], 0.5)
    assert keep.shape == (0,) and kept.shape == (0,)
    assert temporal_nms(segs, [0.9, 0.8, 0.7, 0.95, 0.6], 0.95, max_segments=2)[0].tolist() == [3, 0]
    with pytest.raises(ValueError, match="scores must be"):
        temporal_nms(segs, [1.0], 0.5)


def test_soft_nms_linear_and_gaussian_by_hand():
    segs = [[0, 10], [0, 5], [20, 30]]
    # linear, Nt = 0.3: pick 0 (1.0); [0,5] has tIoU 0.5 > 0.3 -> 0.8 * (1 - 0.5) = 0.4; [20,30] untouched 0.6
    keep, kept = temporal_nms(segs, [1.0, 0.8, 0.6], 0.3, method="linear")
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(kept, [1.0, 0.6, 0.4])
    # gaussian, sigma 0.5: 0.8 * exp(-0.25 / 0.5) = 0.4852 (< 0.6, so [20,30] comes second)
    keep, kept = temporal_nms(segs, [1.0, 0.8, 0.6], method="gaussian", sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    np.testing.assert_allclose(kept, [1.0, 0.6, 0.8 * np.exp(-0.5)])
    # min_score drops decayed segments
    keep, _ = temporal_nms(segs, [1.0, 0.8, 0.6], 0.3, method="linear", min_score=0.5)
    assert keep.tolist() == [0, 2]
    with pytest.raises(ValueError, match="unknown NMS method"):
        temporal_nms(segs, [1.0, 0.8, 0.6], method="soft")


# ---------------------------------------------------------------------------------------------------------
# Smoothing, segment detection, pooling
# ---------------------------------------------------------------------------------------------------------
def test_smooth_scores_mean_and_gaussian():
    x = np.array([[0.0, 1.0], [3.0, 1.0], [6.0, 1.0], [0.0, 1.0]])
    # centred mean over 3, ends average the windows that exist: (0+3)/2, (0+3+6)/3, (3+6+0)/3, (6+0)/2
    np.testing.assert_allclose(smooth_scores(x, 3), [[1.5, 1], [3, 1], [3, 1], [3, 1]])
    np.testing.assert_allclose(smooth_scores(x, 1), x)
    g = smooth_scores(x[:, 0], 3, "gaussian", sigma=1.0)
    w = np.exp(-0.5)  # weight of a neighbour at distance 1
    np.testing.assert_allclose(g[1], (0 * w + 3 + 6 * w) / (1 + 2 * w))
    np.testing.assert_allclose(g[0], (0 + 3 * w) / (1 + w))
    np.testing.assert_allclose(smooth_scores(np.full((7, 3), 0.4), 5, "gaussian"), 0.4)  # constant stays
    with pytest.raises(ValueError, match="odd"):
        smooth_scores(x, 2)


def _plateaus():
    """40 windows of 2 s every 1 s; class 0 at 0.9 on windows 5..12 with a dip to 0.3 at window 8, class 1
    at 0.8 on windows 20..29, class 2 at 0.7 on window 33 only, everything else 0.1 (background)."""
    s = np.full((40, 3), 0.1)
    s[5:13, 0] = 0.9
    s[8, 0] = 0.3
    s[20:30, 1] = 0.8
    s[33, 2] = 0.7
    times = np.stack([np.arange(40.0), np.arange(40.0) + 2], axis=1)
    return s, times


def test_detect_segments_finds_the_plateaus():
    s, t = _plateaus()
    got = detect_segments(s, t, threshold=0.5, nms_iou=None, class_names=["a", "b", "c"])
    # runs: a 5..7 -> [5, 9], a 9..12 -> [9, 14], b 20..29 -> [20, 31], c 33 -> [33, 35]; sorted by score
    assert [(d["label"], d["start"], d["end"]) for d in got] == [
        ("a", 5, 9),
        ("a", 9, 14),
        ("b", 20, 31),
        ("c", 33, 35),
    ]
    np.testing.assert_allclose([d["score"] for d in got], [0.9, 0.9, 0.8, 0.7])
    # min_duration 3 s drops the one-window blip of class c
    assert [d["label"] for d in detect_segments(s, t, threshold=0.5, min_duration=3)] == [0, 0, 1]


def test_detect_segments_smoothing_bridges_the_dip_and_scores_are_run_means():
    s, t = _plateaus()
    got = detect_segments(s, t, threshold=0.5, smoothing=3, min_duration=3, class_names=["a", "b", "c"])
    # class a smoothed over 3 windows: windows 4 and 13 (0.1+0.1+0.9)/3 < 0.5 stay off; windows 5..12 are
    # (0.1+0.9+0.9)/3, 0.9, (0.9+0.9+0.3)/3, (0.9+0.3+0.9)/3, (0.3+0.9+0.9)/3, 0.9, 0.9, (0.9+0.9+0.1)/3: one run
    sm_a = [1.9 / 3, 0.9, 0.7, 0.7, 0.7, 0.9, 0.9, 1.9 / 3]  # mean 0.7583
    sm_b = [1.7 / 3] + [0.8] * 8 + [1.7 / 3]  # mean 0.7533
    assert [(d["label"], d["start"], d["end"]) for d in got] == [("a", 5, 14), ("b", 20, 31)]
    np.testing.assert_allclose([d["score"] for d in got], [np.mean(sm_a), np.mean(sm_b)])


def test_detect_segments_background_nms_and_bad_input():
    s, t = _plateaus()
    assert detect_segments(np.full((40, 3), 0.2), t, threshold=0.5) == []
    # with column 1 declared background it forms no segment
    assert {d["label"] for d in detect_segments(s, t, threshold=0.5, background=1)} == {0, 2}
    # two classes on the same stretch: class-agnostic NMS keeps the better one only
    two = np.full((10, 2), 0.1)
    two[2:6, 0], two[2:7, 1] = 0.9, 0.6
    tt = np.stack([np.arange(10.0), np.arange(10.0) + 1], axis=1)
    assert len(detect_segments(two, tt, threshold=0.5)) == 2
    only = detect_segments(two, tt, threshold=0.5, class_agnostic_nms=True)
    assert [(d["label"], d["start"], d["end"]) for d in only] == [(0, 2, 6)]
    with pytest.raises(ValueError, match="window_times must be"):
        detect_segments(s, t[:-1], threshold=0.5)
    with pytest.raises(ValueError, match="sorted by start"):
        detect_segments(s, t[::-1].copy(), threshold=0.5)
    with pytest.raises(ValueError, match=r"window_times\[0\].*ends before it starts"):
        detect_segments(s, t[:, ::-1].copy(), threshold=0.5)


def test_pool_window_scores():
    x = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4]])
    np.testing.assert_allclose(pool_window_scores(x, "mean"), [0.3, 0.5])
    np.testing.assert_allclose(pool_window_scores(x, "max"), [0.5, 0.9])
    np.testing.assert_allclose(pool_window_scores(x, "topk", k=2), [0.4, 0.65])
    np.testing.assert_allclose(pool_window_scores(x, "topk", k=10), [0.3, 0.5])  # k capped at W
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_window_scores(x, "median")


# ---------------------------------------------------------------------------------------------------------
# Detection AP / mAP
# ---------------------------------------------------------------------------------------------------------
def _hand_case() -> tuple[GroundTruth, dict]:
    gt = GroundTruth(
        segments={
            "v1": [{"start": 0, "end": 10, "label": "A"}, {"start": 20, "end": 30, "label": "A"}],
            "v2": [{"start": 5, "end": 15, "label": "A"}, {"start": 0, "end": 4, "label": "B"}],
            "v4": [],  # a video of the subset without instances
        },
        classes=["A", "B", "C"],  # C: a known class (e.g. from the taxonomy) without instances
    )
    det = {
        "v1": [
            {"start": 0, "end": 10, "label": "A", "score": 0.9},  # tIoU 1 with A@v1[0,10]: TP
            {"start": 1, "end": 10, "label": "A", "score": 0.8},  # same instance again (0.9): duplicate, FP
            {"start": 22.2, "end": 30, "label": "A", "score": 0.5},  # tIoU 7.8/10 = 0.78 with [20,30]
            {"start": 0, "end": 10, "label": "C", "score": 0.99},  # class without instances: ignored
        ],
        "v2": [{"start": 5, "end": 12.8, "label": "A", "score": 0.6}],  # tIoU 0.78 with [5,15]
        "v3": [{"start": 0, "end": 5, "label": "A", "score": 0.7}],  # video without ground truth: FP
    }
    return gt, det


def test_detection_ap_by_hand():
    gt, det = _hand_case()
    res = evaluate_detection(gt, det)
    # Class A, 3 instances.  By score: 0.9 TP, 0.8 FP (duplicate), 0.7 FP (v3), 0.6 and 0.5 TP iff tIoU 0.78
    # reaches the threshold.
    # thresholds 0.50..0.75: TP FP FP TP TP -> precision 1, 1/2, 1/3, 1/2, 3/5 at recall 1/3, 1/3, 1/3, 2/3, 1;
    #   monotone envelope: 1 at recall 1/3, 3/5 at 2/3 and 1 -> AP = 1/3 * 1 + 1/3 * 3/5 + 1/3 * 3/5 = 11/15
    # thresholds 0.80..0.95: TP then four FP -> AP = 1/3 * 1 = 1/3
    # Class B: one instance, no detection -> AP 0 at every threshold.  C has no instance: not evaluated.
    assert res.classes == ["A", "B"]
    expect_a = np.where(TIOU_THRESHOLDS <= 0.78, 11 / 15, 1 / 3)
    np.testing.assert_allclose(res.ap[:, 0], expect_a)
    np.testing.assert_allclose(res.ap[:, 1], 0.0)
    np.testing.assert_allclose(res.mAP, expect_a / 2)
    np.testing.assert_allclose(res.average_mAP, (6 * 11 / 15 + 4 / 3) / 10 / 2)
    d = res.as_dict()
    assert d["tiou_thresholds"][0] == 0.5 and d["tiou_thresholds"][-1] == 0.95
    assert d["average_mAP"] == pytest.approx((6 * 11 / 15 + 4 / 3) / 20)


def test_detection_each_instance_matched_once_falls_through_to_the_next():
    # one video, instances g0 [0,10] and g1 [2,12].  p0 [0,10] (0.9) takes g0.  p1 [0,11] (0.8): tIoU 10/11
    # with g0 (taken), 9/12 = 0.75 with g1 -> TP at 0.5 (matched to g1), FP at 0.8 (0.75 < 0.8 stops the search)
    ap = average_precision_detection(
        ["v", "v"], [[0, 10], [2, 12]], ["v", "v"], [[0, 10], [0, 11]], [0.9, 0.8], tiou_thresholds=[0.5, 0.8]
    )
    # 0.5: TP TP -> AP 1.   0.8: TP FP -> precision 1 at recall 1/2, then 1/2 -> AP 1/2 * 1 = 0.5
    np.testing.assert_allclose(ap, [1.0, 0.5])
    # no predictions: 0; no instances: undefined
    np.testing.assert_allclose(average_precision_detection(["v"], [[0, 1]], [], np.zeros((0, 2)), []), 0.0)
    assert np.isnan(average_precision_detection([], np.zeros((0, 2)), ["v"], [[0, 1]], [1.0])).all()


def _reference_ap(gt_vid, gt_seg, pr_vid, pr_seg, pr_score, thr):
    """AP from the definition, written independently: greedy matching in decreasing score order, each
    prediction to the unmatched instance of its video with the largest tIoU >= thr; AP = (1 / #instances) *
    sum over the true positives of the best precision reached at that rank or later."""
    order = sorted(range(len(pr_score)), key=lambda i: -pr_score[i])
    used = [False] * len(gt_seg)
    tp = []
    for i in order:
        s, e = pr_seg[i]
        best, best_iou = None, -1.0
        for g, (gs, ge) in enumerate(gt_seg):
            if gt_vid[g] != pr_vid[i] or used[g]:
                continue
            inter = max(0.0, min(e, ge) - max(s, gs))
            iou = inter / ((e - s) + (ge - gs) - inter)
            if iou >= thr and iou > best_iou:
                best, best_iou = g, iou
        if best is not None:
            used[best] = True
        tp.append(best is not None)
    precision = [sum(tp[: r + 1]) / (r + 1) for r in range(len(tp))]
    return sum(max(precision[r:]) for r in range(len(tp)) if tp[r]) / len(gt_seg)


def test_detection_ap_matches_a_reference_on_random_data():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n_gt, n_pred, n_vid = int(rng.integers(1, 10)), int(rng.integers(1, 30)), int(rng.integers(1, 5))
        gt_vid = [f"v{i}" for i in rng.integers(0, n_vid, n_gt)]
        gt_seg = np.sort(rng.uniform(0, 60, (n_gt, 2)), axis=1)
        pr_vid = [f"v{i}" for i in rng.integers(0, n_vid + 1, n_pred)]  # some in a video without instances
        pr_seg = np.sort(rng.uniform(0, 60, (n_pred, 2)), axis=1)
        for k in np.flatnonzero(rng.random(n_pred) < 0.7):  # most predictions near an instance
            g = rng.integers(n_gt)
            pr_vid[k], pr_seg[k] = gt_vid[g], np.sort(gt_seg[g] + rng.normal(0, 3, 2))
        score = rng.random(n_pred)
        ours = average_precision_detection(gt_vid, gt_seg, pr_vid, pr_seg, score)
        ref = [
            _reference_ap(gt_vid, gt_seg.tolist(), pr_vid, pr_seg.tolist(), score.tolist(), t) for t in TIOU_THRESHOLDS
        ]
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_detection_unknown_label_and_bad_segments():
    gt, det = _hand_case()
    with pytest.raises(ValueError, match=r"video v2: detection 0: label 'Dance' is not a class"):
        evaluate_detection(gt, {**det, "v2": [{"start": 0, "end": 1, "label": "Dance", "score": 1.0}]})
    with pytest.raises(ValueError, match=r"video v1: detection 0: segment \[5.0, 1.0\] ends before it starts"):
        evaluate_detection(gt, {"v1": [{"start": 5, "end": 1, "label": "A", "score": 1.0}]})
    with pytest.raises(ValueError, match="video v1: detection 0: missing score"):
        evaluate_detection(gt, {"v1": [{"start": 0, "end": 1, "label": "A"}]})


# ---------------------------------------------------------------------------------------------------------
# Untrimmed classification
# ---------------------------------------------------------------------------------------------------------
def test_video_classification_by_hand():
    gt = GroundTruth(
        segments={
            "v1": [{"start": 0, "end": 1, "label": "A"}],
            "v2": [{"start": 0, "end": 1, "label": "A"}, {"start": 2, "end": 3, "label": "B"}],
            "v3": [{"start": 0, "end": 1, "label": "B"}, {"start": 5, "end": 6, "label": "B"}],
            "v4": [],
        },
        classes=["A", "B", "C"],
    )
    scores = {  # columns A, B, C
        "v1": [0.6, 0.3, 0.1],  # top A: hit@1
        "v2": [0.2, 0.1, 0.7],  # C, A, B: miss@1, hit@2 (A only: 1/2 of its labels), hit@3
        "v3": [0.5, 0.4, 0.1],  # A, B: miss@1, hit@2
        "v4": [0.9, 0.05, 0.05],  # no labels: not counted in hit@k, a false positive for AP
    }
    res = evaluate_video_classification(gt, scores, ["A", "B", "C"], top_k=(1, 2, 3))
    assert res.hits == pytest.approx({1: 1 / 3, 2: 1.0, 3: 1.0})
    assert res.average_hits == pytest.approx({1: 1 / 3, 2: (1 + 0.5 + 1) / 3, 3: 1.0})
    # A (v1, v2): by score v4 FP, v1 TP, v3 FP, v2 TP -> precision 0, 1/2, 1/3, 1/2 at recall 0, 1/2, 1/2, 1
    #   envelope 1/2 at recall 1/2 and 1 -> AP = 1/2 * 1/2 + 1/2 * 1/2 = 1/2
    # B (v2, v3; v3 counts once): v3 TP, v1 FP, v2 TP, v4 FP -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1
    #   AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    assert res.classes == ["A", "B"]
    np.testing.assert_allclose(res.ap, [0.5, 5 / 6])
    assert res.mAP == pytest.approx((0.5 + 5 / 6) / 2)
    assert res.as_dict()["hit@1"] == pytest.approx(1 / 3)
    # the same video predicted twice: the second is a false positive.  a TP, a FP, b TP -> precision 1, 1/2, 2/3
    # at recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision_classification(["a", "b"], ["a", "a", "b"], [0.9, 0.8, 0.7]) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="'Z' is not a class"):
        evaluate_video_classification(gt, scores, ["A", "B", "Z"])
    with pytest.raises(ValueError, match="video v1: scores must be"):
        evaluate_video_classification(gt, {"v1": [0.1, 0.2]}, ["A", "B", "C"])


def test_classification_ap_and_hits_match_a_reference_on_random_data():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 20))
        has = rng.random(n) < 0.4
        has[0] = True
        vids = [f"v{i}" for i in range(n)]
        score = rng.random(n)
        order = np.argsort(-score)
        tp = has[order]
        precision = np.cumsum(tp) / np.arange(1, n + 1)
        ref = sum(precision[r:].max() for r in range(n) if tp[r]) / has.sum()
        got = average_precision_classification([v for v, h in zip(vids, has, strict=True) if h], vids, score)
        assert got == pytest.approx(ref)
    labels = {f"v{i}": [f"c{j}" for j in rng.choice(6, rng.integers(1, 3), replace=False)] for i in range(20)}
    preds = {v: [(f"c{j}", float(s)) for j, s in enumerate(rng.random(6))] for v in labels}
    for k in (1, 3):
        top = {v: {c for c, _ in sorted(p, key=lambda x: -x[1])[:k]} for v, p in preds.items()}
        assert hit_at_k(labels, preds, k) == pytest.approx(np.mean([bool(top[v] & set(labels[v])) for v in labels]))


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------
def _anet_json(path, database, taxonomy=None):
    path.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": taxonomy or [], "database": database}))
    return path


def test_read_ground_truth_subsets_taxonomy_and_errors(tmp_path):
    db = {
        "a": {"subset": "validation", "duration": 30.0, "annotations": [{"segment": [1, 5.5], "label": "Run"}]},
        "b": {"subset": "training", "duration": 20.0, "annotations": [{"segment": [0, 2], "label": "Swim"}]},
        "c": {"subset": "validation", "duration": 9.0, "annotations": []},
    }
    taxonomy = [
        {"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
        {"nodeId": 1, "nodeName": "Sports", "parentId": 0, "parentName": "Root"},
        {"nodeId": 2, "nodeName": "Run", "parentId": 1, "parentName": "Sports"},
        {"nodeId": 3, "nodeName": "Jump", "parentId": 1, "parentName": "Sports"},
    ]
    p = _anet_json(tmp_path / "gt.json", db, taxonomy)
    gt = read_ground_truth(p)
    assert gt.segments == {"a": [{"start": 1.0, "end": 5.5, "label": "Run"}], "c": []}
    assert gt.classes == ["Jump", "Run", "Swim"]  # annotated anywhere + taxonomy leaves
    assert gt.evaluated_classes == ["Run"] and gt.durations == {"a": 30.0, "c": 9.0}
    assert set(read_ground_truth(p, subset=None).segments) == {"a", "b", "c"}

    bad = _anet_json(
        tmp_path / "bad.json", {"x": {"subset": "validation", "annotations": [{"segment": [5, 1], "label": "Run"}]}}
    )
    with pytest.raises(ValueError, match=r"bad.json: video x: annotation 0: segment \[5.0, 1.0\] ends before"):
        read_ground_truth(bad)
    (tmp_path / "broken.json").write_text('{"database": {')
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_ground_truth(tmp_path / "broken.json")
    (tmp_path / "nodb.json").write_text('{"results": {}}')
    with pytest.raises(ValueError, match="nodb.json: not an ActivityNet JSON"):
        read_ground_truth(tmp_path / "nodb.json")
    noseg = _anet_json(tmp_path / "noseg.json", {"y": {"subset": "validation", "annotations": [{"label": "Run"}]}})
    with pytest.raises(ValueError, match="noseg.json: video y: annotation 0 needs 'segment'"):
        read_ground_truth(noseg)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_ground_truth(tmp_path / "missing.json")


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_detections_round_trip_and_evaluate_from_files(tmp_path, suffix):
    gt, det = _hand_case()
    path = write_detections(tmp_path / f"pred{suffix}", det)
    back = read_detections(path, classes=gt.classes)
    assert back == {
        v: [{k: (float(x) if k != "label" else x) for k, x in d.items()} for d in ds] for v, ds in det.items()
    }
    np.testing.assert_allclose(evaluate_detection(gt, back).ap, evaluate_detection(gt, det).ap)
    if suffix == ".json":
        data = json.loads(path.read_text())
        assert set(data) == {"version", "results", "external_data"}
        assert data["results"]["v2"] == [{"segment": [5.0, 12.8], "label": "A", "score": 0.6}]
    with pytest.raises(ValueError, match=r"video v1: detection 3: label 'C' is not a class"):
        read_detections(path, classes=["A", "B"])


def test_detection_files_bad_input(tmp_path):
    (tmp_path / "p.csv").write_text("video,start,end,label,score\nv,0,1,A,1\n")
    with pytest.raises(ValueError, match="p.csv: expected the header video_id,start,end,label,score"):
        read_detections(tmp_path / "p.csv")
    (tmp_path / "q.csv").write_text("video_id,start,end,label,score\nv,0,x,A,1\n")
    with pytest.raises(ValueError, match="q.csv:2: video v: start, end and score must be numbers"):
        read_detections(tmp_path / "q.csv")
    (tmp_path / "r.json").write_text('{"results": {"v": [{"segment": [3, 1], "label": "A", "score": 1}]}}')
    with pytest.raises(ValueError, match=r"r.json: video v: detection 0: segment \[3.0, 1.0\] ends before"):
        read_detections(tmp_path / "r.json")
    (tmp_path / "s.json").write_text("not json")
    with pytest.raises(ValueError, match="s.json: not valid JSON"):
        read_detections(tmp_path / "s.json")
    with pytest.raises(ValueError, match="written as .json"):
        write_detections(tmp_path / "p.txt", {})


def test_write_classifications_layout(tmp_path):
    p = write_classifications(tmp_path / "cls.json", {"v": [0.2, 0.7, 0.1]}, ["A", "B", "C"], top_n=2)
    data = json.loads(p.read_text())
    assert data["results"] == {"v": [{"label": "B", "score": 0.7}, {"label": "A", "score": 0.2}]}
    assert data["version"] == "VERSION 1.3" and "external_data" in data


# ---------------------------------------------------------------------------------------------------------
# Timeline plot
# ---------------------------------------------------------------------------------------------------------
def test_plot_timeline_writes_a_readable_png(tmp_path):
    import matplotlib.image

    from p3d.evaluation.plots import plot_timeline

    s, t = _plateaus()
    names = ["a", "b", "c"]
    segs = detect_segments(s, t, threshold=0.5, class_names=names)
    gt = [{"start": 5, "end": 14, "label": "a"}, {"start": 20, "end": 31, "label": 1}]
    out = plot_timeline(t, s, names, tmp_path / "tl.png", segments=segs, ground_truth=gt, smoothed=smooth_scores(s, 3))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(out)
    assert img.shape[0] > 200 and img.shape[1] > 600
    rgb = img[..., :3]
    assert rgb.std() > 0.1  # not blank
    # the detections' red outline and the ground truth's green bar are drawn
    red = (rgb[..., 0] > 0.9) & (rgb[..., 1] < 0.2) & (rgb[..., 2] < 0.2)
    green = (rgb[..., 1] > 0.7) & (rgb[..., 0] < 0.4) & (rgb[..., 2] < 0.4)
    assert red.sum() > 100 and green.sum() > 100
    assert [p.name for p in tmp_path.iterdir()] == ["tl.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match="segment label 'z' is not one of the 3 class names"):
        plot_timeline(t, s, names, tmp_path / "x.png", segments=[{"start": 0, "end": 1, "label": "z"}])
    with pytest.raises(ValueError, match="class_names has 2 names for 3"):
        plot_timeline(t, s, names[:2], tmp_path / "x.png")
