import json

import numpy as np
import pytest

from p3d.data import parse_activitynet, probe_video, read_video
from p3d.data.synthetic import CLASSES, UNTRIMMED_JSON, make_synthetic_untrimmed, render_untrimmed
from p3d.evaluation.localization import read_ground_truth
from p3d.fileio import sha256_file

FPS = 25
KW = dict(num_classes=4, segments_per_video=(1, 3), segment_frames=(12, 18), background_frames=(4, 9), size=(48, 64))


@pytest.fixture(scope="module")
def untrimmed(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrimmed")
    return make_synthetic_untrimmed(root, 4, fps=FPS, seed=3, **KW)


def _frames(seconds):
    return [round(x * FPS) for x in seconds]


def test_json_layout_and_parse_activitynet(untrimmed):
    root = untrimmed.parent
    assert untrimmed.name == UNTRIMMED_JSON
    data = json.loads(untrimmed.read_text())
    assert set(data) == {"version", "taxonomy", "database"}
    db = data["database"]
    assert sorted(db) == [f"synthetic{k:04d}" for k in range(4)]
    assert [db[v]["subset"] for v in sorted(db)] == ["validation"] * 2 + ["training"] * 2
    labels = sorted({a["label"] for v in db.values() for a in v["annotations"]})
    assert set(labels) <= set(CLASSES[:4])

    for subset in ("training", "validation"):
        vids = sorted(v for v in db if db[v]["subset"] == subset)
        whole = parse_activitynet(untrimmed, root, subset)
        assert whole.missing == [] and [s.video_id for s in whole] == vids
        assert whole.classes == labels
        trimmed = parse_activitynet(untrimmed, root, subset, trimmed=True)
        want = [
            (v, a["segment"][0], a["segment"][1], labels.index(a["label"])) for v in vids for a in db[v]["annotations"]
        ]
        assert [(s.video_id.split("#")[0], s.start, s.end, s.label) for s in trimmed] == want
    gt = read_ground_truth(untrimmed)
    assert set(gt.segments) == {"synthetic0000", "synthetic0001"}
    assert set(gt.classes) == set(CLASSES[:4])  # the taxonomy names every class, annotated or not


def _changed(x, y):
    """Share of pixels whose colour changed a lot (H.264 noise on still frames stays below 25 levels)."""
    return (np.abs(y - x).max(axis=-1) > 25).mean()


def test_boundaries_match_the_rendered_motion(untrimmed):
    db = json.loads(untrimmed.read_text())["database"]
    for vid, v in db.items():
        path = untrimmed.parent / "videos" / f"v_{vid}.mp4"
        frames = read_video(path).astype(np.float32)
        n = len(frames)
        assert n == round(v["duration"] * FPS)
        assert probe_video(path).duration == pytest.approx(v["duration"], abs=1e-6)
        action = np.zeros(n, dtype=bool)
        stretches = []
        for a in v["annotations"]:
            s, e = _frames(a["segment"])
            assert a["segment"] == [s / FPS, e / FPS] and 0 < s < e < n
            action[s:e] = True
            stretches.append((s, e))
        # still stretches before, between and after the actions
        bounds = [0] + [x for se in stretches for x in se] + [n]
        stills = [(a, b) for a, b in zip(bounds[0::2], bounds[1::2], strict=True) if b > a]
        assert not action[np.concatenate([np.arange(a, b) for a, b in stills])].any()

        for a, b in stills:  # nothing moves: first and last frame of a still stretch agree
            assert _changed(frames[a], frames[b - 1]) == 0.0, (vid, a, b)
        for a, b in stretches:  # the object moves across an action
            assert _changed(frames[a], frames[b - 1]) > 0.005, (vid, a, b)


def test_render_untrimmed_moves_exactly_inside_the_actions():
    rng = np.random.default_rng(0)
    names, lengths, gaps = ["MoveLeft", "Approach", "RotateCW"], [6, 8, 5], [3, 4, 0, 2]
    f = render_untrimmed(names, rng, lengths, gaps, size=(32, 32))
    assert f.shape == (sum(lengths) + sum(gaps), 32, 32, 3) and f.dtype == np.uint8
    moving = np.abs(np.diff(f.astype(np.int16), axis=0)).max(axis=(1, 2, 3)) > 0  # frame t -> t + 1
    inside = np.zeros(len(f) - 1, dtype=bool)  # both frames in the same action
    t = 0
    for gap, n in zip(gaps, lengths, strict=False):
        t += gap
        inside[t : t + n - 1] = True
        t += n
    # the pose continues across actions (position and angle exactly): only a size step when an Approach or
    # Recede would leave the size range, at an action's first frame; here every change is inside an action
    np.testing.assert_array_equal(moving, inside)
    with pytest.raises(ValueError, match="one gap more"):
        render_untrimmed(names, rng, lengths, gaps[:-1])


def test_deterministic_per_seed(tmp_path, untrimmed):
    again = make_synthetic_untrimmed(tmp_path / "b", 4, fps=FPS, seed=3, **KW)
    other = make_synthetic_untrimmed(tmp_path / "c", 4, fps=FPS, seed=4, **KW)
    assert again.read_bytes() == untrimmed.read_bytes()
    assert other.read_bytes() != untrimmed.read_bytes()
    for k in range(4):
        name = f"videos/v_synthetic{k:04d}.mp4"
        assert sha256_file(again.parent / name) == sha256_file(untrimmed.parent / name)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_classes must be in 1..8"):
        make_synthetic_untrimmed(tmp_path, 1, num_classes=9)
    with pytest.raises(ValueError, match="background_frames must be a range"):
        make_synthetic_untrimmed(tmp_path, 1, background_frames=(5, 2), size=(16, 16))
