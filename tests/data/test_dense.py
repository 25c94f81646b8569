"""Dense windows along long videos: the layout (hand-computed starts, indices and times, constant and variable frame
rate, overlapping and gapped strides, the last partial window, videos shorter than a window), the streaming
assembly (each window leaves as soon as its last frame arrives, only one window span of frames kept, gaps filled),
and decoding a real file once."""

from __future__ import annotations

import weakref
from fractions import Fraction

import numpy as np
import pytest

from p3d.data.dense import (
    DenseWindowsDataset,
    assemble_windows,
    end_time,
    iter_video_windows,
    window_layout,
    window_starts,
)
from p3d.data.video import VideoReader
from p3d.spec import InputSpec

from .helpers import frame_index, make_frames, write


@pytest.mark.parametrize(
    ("num_frames", "stride", "window", "pad", "drop"),
    [
        (100, 16, 16, [0, 16, 32, 48, 64, 80, 96], [0, 16, 32, 48, 64, 80]),  # 96..99 left: a padded window
        (96, 16, 16, [0, 16, 32, 48, 64, 80], [0, 16, 32, 48, 64, 80]),  # ends exactly at the end
        (30, 4, 16, [0, 4, 8, 12, 16], [0, 4, 8, 12]),  # overlapping: 12 ends at 28 < 30, 16 covers 28, 29
        (100, 32, 16, [0, 32, 64, 96], [0, 32, 64]),  # gapped: 96..99 are frames of a window
        (90, 32, 16, [0, 32, 64], [0, 32, 64]),  # gapped: 80..89 fall in the gap after 64's window
        (5, 4, 16, [0], [0]),  # shorter than one window: one (padded) window
        (16, 100, 16, [0], [0]),
    ],
)
def test_window_starts(num_frames, stride, window, pad, drop):
    assert window_starts(num_frames, stride, window, "pad").tolist() == pad
    assert window_starts(num_frames, stride, window, "drop").tolist() == drop


@pytest.mark.parametrize("stride", [0, -4, 2.5, True, "16"])
def test_bad_stride_is_one_line_error(stride):
    with pytest.raises(ValueError, match=r"stride must be a whole number of frames >= 1, got"):
        window_starts(100, stride, 16)


def test_bad_last_policy():
    with pytest.raises(ValueError, match="last window policy must be one of"):
        window_starts(100, 16, 16, "loop")


def test_layout_constant_rate_with_frame_stride():
    """clip_len 4 every 2nd frame: a window spans 8 frames; at 10 fps frame i is shown at i / 10 s."""
    spec = InputSpec(clip_len=4, frame_stride=2, size=(8, 8), resize=(8, 8))
    times = np.arange(22) / 10.0
    lay = window_layout(times, spec, stride=6)
    # starts 0, 6, 12 fit (12 + 8 = 20 <= 22); frames 20, 21 remain, so 18 is added with the last frame repeated
    np.testing.assert_array_equal(
        lay.indices, [[0, 2, 4, 6], [6, 8, 10, 12], [12, 14, 16, 18], [18, 20, 21, 21]]
    )  # fmt: skip
    # [t(s), t(s + 8)]; past the last frame: its time plus the interval before it, 2.1 + 0.1
    np.testing.assert_allclose(lay.times, [[0.0, 0.8], [0.6, 1.4], [1.2, 2.0], [1.8, 2.2]])
    drop = window_layout(times, spec, stride=6, last="drop")
    assert drop.num_windows == 3 and drop.times[-1].tolist() == pytest.approx([1.2, 2.0])
    gapped = window_layout(times, spec, stride=10)  # starts 0, 10, then 20 (frames 20, 21 exist)
    np.testing.assert_allclose(gapped.times, [[0.0, 0.8], [1.0, 1.8], [2.0, 2.2]])
    np.testing.assert_array_equal(gapped.indices[-1], [20, 21, 21, 21])


def test_layout_variable_frame_rate_and_segment():
    """Times are the frames' own timestamps, not index / fps."""
    spec = InputSpec(clip_len=2, size=(8, 8), resize=(8, 8))
    t = np.array([0.0, 0.1, 0.3, 0.35, 0.6, 1.0])
    lay = window_layout(t, spec, stride=2)
    np.testing.assert_allclose(lay.times, [[0.0, 0.3], [0.3, 0.6], [0.6, 1.4]])  # the last frame lasts 0.4 s
    assert end_time(t[:1], fps=4.0) == 0.25  # one frame: 1 / fps
    seg = window_layout(t, spec, stride=2, segment=(1, 4))  # frames 1..3: windows at 1 and 3 (padded)
    np.testing.assert_array_equal(seg.indices, [[1, 2], [3, 3]])
    np.testing.assert_allclose(seg.times, [[0.1, 0.35], [0.35, 0.6]])  # the segment ends at t(4)


def test_short_video_gives_one_padded_window():
    spec = InputSpec(clip_len=8, size=(8, 8), resize=(8, 8))
    lay = window_layout(np.arange(3) / 25.0, spec, stride=16)
    np.testing.assert_array_equal(lay.indices, [[0, 1, 2, 2, 2, 2, 2, 2]])
    np.testing.assert_allclose(lay.times, [[0.0, 0.12]])


def _stream(n, log, skip=()):
    for i in range(n):
        if i in skip:
            continue
        log.append(i)
        yield i, np.full((1,), i, dtype=np.int64)


def test_assemble_windows_streams_with_bounded_memory():
    spec = InputSpec(clip_len=4, size=(8, 8), resize=(8, 8))
    lay = window_layout(np.arange(41) / 25.0, spec, stride=3)  # overlapping windows of 4 frames every 3
    pulled: list[int] = []
    alive: list[weakref.ref] = []

    def frames():
        for i, img in _stream(41, pulled):
            alive.append(weakref.ref(img))
            yield i, img

    peak = 0
    for k, clip in assemble_windows(frames(), lay.indices):
        np.testing.assert_array_equal(clip[:, 0], lay.indices[k])
        assert pulled[-1] == lay.indices[k].max()  # handed out as soon as its last frame came, no read-ahead
        peak = max(peak, sum(r() is not None for r in alive))
    assert k == lay.num_windows - 1 == 13
    assert peak <= 4 + 1  # one window's frames (+ the frame just read), whatever the video's length


def test_assemble_windows_fills_gaps():
    idx = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    got = {k: c[:, 0].tolist() for k, c in assemble_windows(_stream(7, [], skip={0, 1, 4}), idx)}
    # 0, 1 missing at the start: the first frame (2); 4 missing: the one before (3); 7, 8 after the end: the last (6)
    assert got == {0: [2, 2, 2], 1: [3, 3, 5], 2: [6, 6, 6]}
    with pytest.raises(ValueError, match="no frame could be decoded"):
        list(assemble_windows(iter(()), idx))


def test_variable_frame_rate_file(tmp_path):
    """A VFR file: window times are its timestamps; the windows hold the right frames (each frame shows its
    index), decoded in one pass."""
    pts = [0, 1, 2, 4, 8, 9, 10, 12, 16, 17, 18, 20, 24, 25]  # in 1/25 s: irregular gaps
    path = write(tmp_path / "vfr.mkv", make_frames(len(pts)), pts=pts, time_base=Fraction(1, 25))
    spec = InputSpec(clip_len=4, size=(48, 64), resize=(48, 64))
    chunks = list(iter_video_windows(path, spec, stride=3, chunk=2))
    times = np.concatenate([c.times for c in chunks])
    t = np.asarray(pts) / 25.0
    starts = [0, 3, 6, 9, 12]  # 9 + 4 = 13 < 14: 12 padded
    ends = [t[s + 4] if s + 4 < len(t) else t[-1] + (t[-1] - t[-2]) for s in starts]
    np.testing.assert_allclose(times, np.stack([t[starts], ends], axis=1), atol=1e-9)
    frames = np.concatenate([c.frames for c in chunks])
    assert [c.first for c in chunks] == [0, 2, 4] and {c.total for c in chunks} == {5}
    got = [[frame_index(f) for f in w] for w in frames]
    assert got == [[s + j if s + j < 14 else 13 for j in range(4)] for s in starts]


def test_one_pass_no_seek(tmp_path, monkeypatch):
    path = write(tmp_path / "v.mp4", make_frames(40), options={"g": "8"})
    spec = InputSpec(clip_len=4, size=(32, 32), resize=(48, 64))
    with VideoReader(path) as r:  # the per-window reference: random access
        ref = r.get_frames(window_layout(r.frame_times(), spec, 5).indices.reshape(-1), size=spec.resize)
    calls = []
    monkeypatch.setattr(VideoReader, "_seek", lambda *a: pytest.fail("seek during a dense pass"))
    monkeypatch.setattr(VideoReader, "get_frames", lambda *a, **k: pytest.fail("random access during a dense pass"))
    orig = VideoReader.iter_indexed_frames
    monkeypatch.setattr(VideoReader, "iter_indexed_frames", lambda self, **k: calls.append(1) or orig(self, **k))
    frames = np.concatenate([c.frames for c in iter_video_windows(path, spec, stride=5, chunk=3)])
    assert len(calls) == 1
    ref = ref.reshape(len(frames), 4, 48, 64, 3)[:, :, 8:40, 16:48]  # centre crop 32x32 of 48x64
    np.testing.assert_array_equal(frames, ref)  # the same pixels as decoding each window on its own


def test_dataset_items_and_bad_files(tmp_path):
    from p3d.data.datasets import Sample

    good = write(tmp_path / "v.mp4", make_frames(20))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 64)
    spec = InputSpec(clip_len=4, size=(32, 32), resize=(48, 64))
    items = [Sample(str(good), (0,), "v"), Sample(str(junk), (), "junk"), Sample(str(tmp_path / "gone.mp4"), (), "g")]
    ds = DenseWindowsDataset(items, spec, stride=4, chunk=2, flip=True)
    got = list(ds)
    ok = [it for it in got if it["valid"]]
    assert [it["first"] for it in ok] == [0, 2, 4] and {it["total"] for it in ok} == {5}
    w = ok[0]["windows"]
    assert tuple(w.shape) == (4, 4, 32, 32, 3)  # 2 windows + their mirrors
    np.testing.assert_array_equal(w[2:].numpy(), w[:2].numpy()[:, :, :, ::-1])
    bad = {it["video_index"]: it["error"] for it in got if not it["valid"]}
    assert "not a readable video" in bad[1] and "file not found" in bad[2]
    with pytest.raises(ValueError, match="chunk must be"):
        DenseWindowsDataset(items, spec, chunk=0)


def test_video_shorter_than_a_window(tmp_path):
    path = write(tmp_path / "short.mp4", make_frames(3))
    spec = InputSpec(clip_len=8, size=(48, 64), resize=(48, 64))
    (chunk,) = iter_video_windows(path, spec, stride=16)
    assert chunk.total == 1 and [frame_index(f) for f in chunk.frames[0]] == [0, 1, 2, 2, 2, 2, 2, 2]
    np.testing.assert_allclose(chunk.times, [[0.0, 0.12]])  # 3 frames at 25 fps
