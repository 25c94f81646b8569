import os
from fractions import Fraction

import numpy as np
import pytest

from p3d.data import VideoReader, probe_video, read_video
from p3d.data import video as video_mod
from p3d.errors import VideoReadError

from .helpers import frame_index, make_frames, require_encoder, write

# (file name, encoder, pix_fmt, options, (H, W), codec tag)
FORMATS = [
    ("h264.mp4", "libx264", "yuv420p", {}, (48, 64), None),
    ("h264_bframes_gop.mp4", "libx264", "yuv420p", {"preset": "medium", "g": "12", "bf": "3"}, (48, 64), None),
    ("hevc.mp4", "libx265", "yuv420p", {}, (48, 64), None),
    ("vp9.webm", "libvpx-vp9", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}, (48, 64), None),
    ("xvid.avi", "mpeg4", "yuv420p", {"qscale": "2"}, (48, 64), "XVID"),
    ("mjpeg.avi", "mjpeg", "yuvj420p", {}, (48, 64), None),
    ("h264.mkv", "libx264", "yuv420p", {}, (48, 64), None),
    ("anim.gif", "gif", "rgb8", {}, (48, 64), None),
    ("h264_10bit.mp4", "libx264", "yuv420p10le", {}, (48, 64), None),
    ("h264_444.mp4", "libx264", "yuv444p", {}, (48, 64), None),
    ("gray.mkv", "ffv1", "gray", {}, (48, 64), None),
    ("odd_size.mkv", "ffv1", "yuv444p", {}, (37, 51), None),
]


@pytest.mark.parametrize("name,codec,pix_fmt,opts,hw,tag", FORMATS, ids=[f[0] for f in FORMATS])
def test_formats_decode_every_frame_and_seek(tmp_path, name, codec, pix_fmt, opts, hw, tag):
    n = 30
    frames = make_frames(n, *hw)
    if codec == "gif":
        require_encoder("gif")
        _write_gif(tmp_path / name, frames)
    else:
        write(tmp_path / name, frames, codec, pix_fmt, options=opts, codec_tag=tag)
    info = probe_video(tmp_path / name)
    assert (info.num_frames, info.height, info.width) == (n, *hw)
    allf = read_video(tmp_path / name)
    assert allf.shape == (n, *hw, 3) and allf.dtype == np.uint8
    assert [frame_index(f) for f in allf] == list(range(n))
    with VideoReader(tmp_path / name) as r:
        for idx in ([17, 18, 19], [29], [3, 25, 3, 0], list(range(8, 24))):
            got = r.get_frames(idx)
            np.testing.assert_array_equal(got, allf[idx])
        small = r.get_frames([5, 6], size=(24, 32))
        assert small.shape == (2, 24, 32, 3)
        assert [frame_index(f) for f in small] == [5, 6]


def _write_gif(path, frames):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("gif", rate=10)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "rgb8"
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="rgb8")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_random_access_matches_full_decode_with_bframes_and_long_gop(tmp_path):
    rng = np.random.default_rng(0)
    frames = make_frames(48)
    # texture so that the encoder really uses P/B prediction
    frames = np.clip(frames.astype(int) + rng.integers(-3, 4, frames.shape[1:]), 0, 255).astype(np.uint8)
    p = write(tmp_path / "b.mp4", frames, options={"preset": "medium", "g": "20", "bf": "3"})
    full = read_video(p)
    with VideoReader(p) as r:
        for _ in range(10):
            idx = np.sort(rng.choice(48, size=int(rng.integers(1, 12)), replace=False))
            np.testing.assert_array_equal(r.get_frames(idx), full[idx])


def test_seek_fallback_decodes_from_start(tmp_path, monkeypatch):
    p = write(tmp_path / "v.mp4", make_frames(48), options={"g": "10"})
    full = read_video(p)

    def broken_seek(self, pts):
        raise video_mod._SeekUnreliable("simulated")

    monkeypatch.setattr(VideoReader, "_seek", broken_seek)
    with VideoReader(p) as r:
        np.testing.assert_array_equal(r.get_frames([31, 32, 2]), full[[31, 32, 2]])


def test_variable_frame_rate(tmp_path):
    tb = Fraction(1, 1000)
    durations = [40, 40, 120, 10, 10, 200, 40, 33, 33, 500, 40, 40, 40, 80, 40, 40]
    pts = np.concatenate([[0], np.cumsum(durations[:-1])]).tolist()
    frames = make_frames(len(pts))
    p = write(tmp_path / "vfr.mkv", frames, pts=pts, time_base=tb, options={"g": "5"})
    with VideoReader(p) as r:
        assert r.num_frames == len(pts)
        np.testing.assert_allclose(r.frame_times(), np.array(pts) / 1000.0, atol=1e-3)
        got = r.get_frames([9, 10, 3])
        assert [frame_index(f) for f in got] == [9, 10, 3]
        # the segment [0.3 s, 0.6 s) holds the frames whose times fall in it
        times = np.array(pts) / 1000
        a, b = r.frame_range(0.3, 0.6)
        assert list(range(a, b)) == [i for i, t in enumerate(times) if 0.3 <= t < 0.6]


def test_video_stream_not_first_and_nonzero_start(tmp_path):
    tb = Fraction(1, 25)
    frames = make_frames(20)
    p = write(tmp_path / "a_then_v.mkv", frames, audio_first=True, pts=list(range(125, 145)), time_base=tb)
    info = probe_video(p)
    assert info.stream_index == 1
    assert info.num_frames == 20
    assert info.start_time == pytest.approx(5.0, abs=0.05)
    with VideoReader(p) as r:
        assert r.frame_times()[0] == 0.0
        assert [frame_index(f) for f in r.get_frames([0, 1, 19])] == [0, 1, 19]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    frames = make_frames(5, 48, 64)  # marker top-left
    p = write(tmp_path / "rot.mp4", frames, rotation=rotation)
    info = probe_video(p)
    assert info.rotation == rotation
    img = read_video(p, [0])[0]
    expected = np.rot90(frames[0], rotation // 90)  # counter-clockwise, as the display matrix says
    assert img.shape == expected.shape
    marker = img[..., 0] > 200
    exp_marker = expected[..., 0] > 200
    assert (marker == exp_marker).mean() > 0.97
    assert (info.height, info.width) == expected.shape[:2]
    resized = read_video(p, [0], size=(30, 20))
    assert resized.shape == (1, 30, 20, 3)


def _broken_files(tmp_path):
    good = write(tmp_path / "good.mp4", make_frames(20))
    out = {}
    out["empty"] = tmp_path / "empty.mp4"
    out["empty"].write_bytes(b"")
    out["random"] = tmp_path / "random.mp4"
    out["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    out["text"] = tmp_path / "notes.avi"
    out["text"].write_text("this is not a video, just text renamed to .avi\n" * 50)
    out["truncated"] = tmp_path / "truncated.mp4"
    out["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    out["missing"] = tmp_path / "nope.mp4"
    out["audio_only"] = tmp_path / "audio.wav"
    import av

    with av.open(str(out["audio_only"]), "w") as c:
        a = c.add_stream("pcm_s16le", rate=8000)
        af = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        af.sample_rate = 8000
        for pkt in a.encode(af):
            c.mux(pkt)
        for pkt in a.encode():
            c.mux(pkt)
    return out


@pytest.mark.parametrize("kind", ["empty", "random", "text", "truncated", "missing", "audio_only"])
def test_unreadable_files_raise_one_error_type_with_path_and_reason(tmp_path, kind):
    path = _broken_files(tmp_path)[kind]
    with pytest.raises(VideoReadError) as ei:
        read_video(path)
    assert ei.value.path == str(path)
    assert str(path) in str(ei.value) and ei.value.reason
    expected_words = {
        "empty": "empty",
        "missing": "not found",
        "audio_only": "no video stream",
    }
    if kind in expected_words:
        assert expected_words[kind] in ei.value.reason


def test_damaged_stream_yields_the_frames_that_decode(tmp_path):
    rng = np.random.default_rng(1)
    frames = make_frames(48)
    frames = np.clip(frames.astype(int) + rng.integers(-20, 21, frames.shape), 0, 255).astype(np.uint8)
    p = write(tmp_path / "d.mkv", frames, options={"g": "10"})
    data = bytearray(p.read_bytes())
    n = len(data)
    for k in range(n // 3, n // 3 + 800, 7):  # scribble over a middle stretch of the stream
        data[k] = (data[k] * 31 + 7) % 256
    (tmp_path / "damaged.mkv").write_bytes(bytes(data))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(p.read_bytes()[: int(n * 0.6)])  # truncated mkv: the first frames still decode
    for q in (tmp_path / "damaged.mkv", cut):
        with VideoReader(q) as r:
            got = r.read_all()
            assert len(got) == r.num_frames >= 10
            assert frame_index(got[0]) == 0


def test_index_cache_is_invalidated_by_a_rewrite(tmp_path):
    p = write(tmp_path / "v.mp4", make_frames(10))
    assert probe_video(p).num_frames == 10
    write(tmp_path / "v.mp4", make_frames(14))
    os.utime(p, ns=(1, 10**18))  # a different mtime, whatever the clock resolution
    assert probe_video(p).num_frames == 14


def test_out_of_range_index(tmp_path):
    p = write(tmp_path / "v.mp4", make_frames(10))
    with VideoReader(p) as r, pytest.raises(VideoReadError, match="out of range"):
        r.get_frames([10])
