"""Late fusion of stream scores, their saved form, and the joining of two streams' feature stores."""

from __future__ import annotations

import numpy as np
import pytest

from p3d.engine.evaluate import EvalResult
from p3d.engine.fusion import fuse_results, load_scores, save_scores
from p3d.representation.store import FeatureSet, join_features


def _result(ids, scores, labels, failed=None):
    return EvalResult(
        classes=["a", "b", "c"],
        video_ids=list(ids),
        paths=[f"/d/{i}.mp4" for i in ids],
        labels=[(lab,) for lab in labels],
        scores=np.asarray(scores, np.float32),
        clip_hits=1,
        num_clips=4,
        failed=failed or {},
    )


def test_fusion_is_the_weighted_mean_over_common_videos_and_can_overturn_a_stream():
    rgb = _result(["v1", "v2", "v3"], [[0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [1, 0, 0]], [1, 1, 0], {"/d/v4.mp4": "bad"})
    flow = _result(["v2", "v1"], [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1]], [1, 1])
    fused = fuse_results({"rgb": rgb, "flow": flow}, {"rgb": 1.0, "flow": 2.0})
    assert fused.video_ids == ["v1", "v2"]
    np.testing.assert_allclose(fused.scores[0], (np.array([0.5, 0.4, 0.1]) + 2 * np.array([0.1, 0.8, 0.1])) / 3)
    assert rgb.metrics()["video_hit@1"] == pytest.approx(2 / 3)  # v1 wrong for RGB alone
    assert fused.metrics()["video_hit@1"] == 1.0  # the flow stream corrects it
    assert np.isnan(fused.metrics()["clip_hit@1"])
    assert fused.failed == {"/d/v4.mp4": "rgb stream: bad", "/d/v3.mp4": "not scored by the flow stream"}
    even = fuse_results({"rgb": rgb, "flow": flow})
    np.testing.assert_allclose(even.scores[1], (np.array([0.2, 0.7, 0.1]) + np.array([0.1, 0.8, 0.1])) / 2)
    with pytest.raises(ValueError, match="all 0"):
        fuse_results({"rgb": rgb, "flow": flow}, {"rgb": 0.0, "flow": 0.0})
    other = _result(["v1"], [[1, 0, 0]], [0])
    other.classes = ["x", "y", "z"]
    with pytest.raises(ValueError, match="share one class list"):
        fuse_results({"rgb": rgb, "flow": other})


def test_scores_files_round_trip_and_reject_other_files(tmp_path):
    r = _result(["v1", "v2"], [[0.5, 0.4, 0.1], [0.2, 0.7, 0.1]], [1, 2], {"/d/x.mp4": "why"})
    save_scores(r, tmp_path / "s.npz", "flow")
    back, modality = load_scores(tmp_path / "s.npz")
    assert modality == "flow" and back.video_ids == r.video_ids and back.labels == r.labels
    assert back.failed == r.failed and back.metrics()["video_hit@1"] == r.metrics()["video_hit@1"]
    np.testing.assert_array_equal(back.scores, r.scores)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a scores file written by p3d test"):
        load_scores(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        load_scores(tmp_path / "missing.npz")


def _fs(ids, x, labels, source):
    return FeatureSet(ids=list(ids), labels=np.array(labels), video={"pool5": np.asarray(x, np.float32)},
                      source=source)  # fmt: skip


def test_join_features_concatenates_l2_normalised_streams_by_video_id():
    rgb = _fs(["a", "b", "c"], [[3, 4], [0, 2], [1, 0]], [0, 1, -1], "rgb")
    flow = _fs(["c", "a"], [[0, 0, 5], [10, 0, 0]], [1, 0], "flow")
    j = join_features([rgb, flow])
    assert j.ids == ["a", "c"] and j.layers == ["pool5+pool5"]
    np.testing.assert_allclose(j.layer(), [[0.6, 0.8, 1, 0, 0], [1, 0, 0, 0, 1]])
    assert j.labels.tolist() == [0, -1] and j.bad == {"b": "only in rgb"}
    with pytest.raises(ValueError, match="labels .* differently"):
        join_features([rgb, _fs(["a"], [[1]], [1], "flow")])
    with pytest.raises(ValueError, match="no video id in common"):
        join_features([rgb, _fs(["z"], [[1]], [1], "flow")])
