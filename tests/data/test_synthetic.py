import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from p3d.data import SYNTHETIC_CLASSES, build_samples, make_synthetic_dataset, read_video, render_video
from p3d.data.synthetic import sample_motion


def test_dataset_layout_splits_and_determinism(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_classes=3, videos_per_class=3, num_frames=8, size=(32, 32), seed=5)
    b = make_synthetic_dataset(tmp_path / "b", num_classes=3, videos_per_class=3, num_frames=8, size=(32, 32), seed=5)
    c = make_synthetic_dataset(tmp_path / "c", num_classes=3, videos_per_class=3, num_frames=8, size=(32, 32), seed=6)
    train = build_samples("ucf101", a, subset="train")
    test = build_samples("ucf101", a, subset="test")
    assert train.classes == list(SYNTHETIC_CLASSES[:3])
    assert len(train) == 6 and len(test) == 3 and train.class_counts() == dict.fromkeys(train.classes, 2)
    for s in train:
        rel = s.path.split("UCF-101/")[1]
        va, vb, vc = (read_video(r / "UCF-101" / rel) for r in (a, b, c))
        assert va.shape == (8, 32, 32, 3)
        np.testing.assert_array_equal(va, vb)
        assert not np.array_equal(va, vc)


def test_motion_matches_class():
    rng = np.random.default_rng(0)
    m = {c: sample_motion(c, rng, 16, (64, 64)) for c in SYNTHETIC_CLASSES}
    dx = np.diff(np.unwrap(m["MoveLeft"].centre[:, 1], period=64))
    assert np.all(dx < 0) and np.all(np.diff(np.unwrap(m["MoveRight"].centre[:, 1], period=64)) > 0)
    assert np.all(np.diff(m["Approach"].radius) > 0) and np.all(np.diff(m["Recede"].radius) < 0)
    assert np.all(np.diff(np.unwrap(m["RotateCW"].angle)) < 0)
    assert np.all(np.diff(m["MoveLeft"].radius) == 0) and np.all(np.diff(m["RotateCW"].centre, axis=0) == 0)
    with pytest.raises(ValueError, match="unknown synthetic class"):
        sample_motion("Jump", rng, 16, (64, 64))


def _videos(per_class, classes, t=12, size=(32, 32)):
    vids, labels = [], []
    for c, name in enumerate(classes):
        for k in range(per_class):
            vids.append(render_video(name, np.random.default_rng([99, c, k]), t, size))
            labels.append(c)
    return np.stack(vids).astype(np.float32), np.array(labels)


def test_single_frames_carry_no_class_information_but_motion_does():
    classes = SYNTHETIC_CLASSES[:6]
    vids, y = _videos(40, classes)
    rng = np.random.default_rng(0)
    t = rng.integers(0, vids.shape[1], len(vids))
    frames = vids[np.arange(len(vids)), t]  # one random frame per video
    pooled = frames.reshape(len(frames), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(frames), -1)
    stats = np.concatenate([frames.mean(axis=(1, 2)), frames.std(axis=(1, 2)), pooled / 255.0], axis=1)
    clf = LogisticRegression(max_iter=2000, C=0.1)
    frame_acc = cross_val_score(clf, stats, y, cv=4).mean()
    assert frame_acc < 1 / 6 + 0.12, f"a single frame predicts the class ({frame_acc:.2f})"
    # per-class mean frames are indistinguishable: the between-class spread is at noise level
    class_means = np.stack([frames[y == c].mean(axis=0) for c in range(6)])
    assert class_means.std(axis=0).mean() < 0.6 * frames.std(axis=0).mean() / np.sqrt(40) * np.sqrt(6)

    # motion carries it: brightness-constancy flow sign separates left from right and up from down
    gray = vids.mean(axis=-1)
    it, ix, iy = np.diff(gray, axis=1), np.gradient(gray, axis=3)[:, :-1], np.gradient(gray, axis=2)[:, :-1]
    flow = np.stack([-(it * ix).sum(axis=(1, 2, 3)), -(it * iy).sum(axis=(1, 2, 3))], axis=1)
    assert np.all(flow[y == 0, 0] < 0) and np.all(flow[y == 1, 0] > 0)
