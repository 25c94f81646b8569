"""Flow files, frame-folder readers, flow clips (flip, crop), flow computed on the fly, and the `p3d flow` job."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from p3d.data import Sample, VideoClipsDataset
from p3d.data.datasets import ClipDataset, samples_from_path
from p3d.data.flowclips import FlowFromRGB, flow_frame_indices
from p3d.data.flowfile import FlowReader, FlowWriter, read_flow_file, write_flow_file
from p3d.data.flowjob import flow_tree, flow_video
from p3d.data.sources import FrameFolder, list_sources, open_source, scan_frame_folder, source_stem
from p3d.data.synthetic import write_video
from p3d.data.transforms import ClipTransform, hflip, hflip_frames, normalize
from p3d.errors import VideoReadError
from p3d.flow import TVL1Params, compute_flow, flip_flow_images, quantize_flow
from p3d.spec import flow_unit, imagenet_rgb

FAST = TVL1Params(nscales=1, warps=1, inner_iterations=10, outer_iterations=2)  # cheap flow for tests


def _images(t=5, h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 2), dtype=np.uint8)


def _moving(n=9, h=32, w=40, dx=1, seed=0):
    """A window sliding ``dx`` px per frame over a random texture (the content moves by ``-dx``): (n, h, w, 3)."""
    rng = np.random.default_rng(seed)
    big = rng.random((h // 4 + 2, (w + n * abs(dx)) // 4 + 3))
    tex = np.kron(big, np.ones((4, 4)))[:h]
    frames = []
    for t in range(n):
        off = t * dx if dx >= 0 else (n - 1 - t) * -dx
        frames.append(tex[:, off : off + w])
    f = (np.stack(frames) * 200 + 20).astype(np.uint8)
    return np.repeat(f[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------------------------- flow files
def test_flow_file_round_trip_is_lossless_and_random_access(tmp_path):
    imgs = _images(7)
    path = write_flow_file(tmp_path / "v.flow.mkv", imgs, fps=30, meta={"bound": 20})
    np.testing.assert_array_equal(read_flow_file(path), imgs)
    with FlowReader(path) as r:
        assert r.num_frames == 7 and r.meta == {"bound": 20}
        np.testing.assert_array_equal(r.get_frames([5, 1, 1]), imgs[[5, 1, 1]])
        small = r.get_frames([2], size=(12, 16))
        assert small.shape == (1, 12, 16, 2)
        assert r.frame_range(0.5 / 30, 3.5 / 30) == (1, 4)  # fields carry their first frame's time


def test_flow_writer_is_atomic_and_checks_its_input(tmp_path):
    with pytest.raises(ValueError, match="must end in .flow.mkv"):
        FlowWriter(tmp_path / "v.mkv", (8, 8))
    with pytest.raises(RuntimeError), FlowWriter(tmp_path / "a.flow.mkv", (24, 32)) as w:
        w.write(_images(2))
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    with pytest.raises(ValueError, match=r"\(N, H, W, 2\)"), FlowWriter(tmp_path / "b.flow.mkv", (24, 32)) as w:
        w.write(np.zeros((2, 24, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="no flow fields"), FlowWriter(tmp_path / "c.flow.mkv", (24, 32)):
        pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(VideoReadError, match="not a p3d flow file"):
        write_video(tmp_path / "rgb.mp4", np.zeros((3, 16, 16, 3), np.uint8))
        (tmp_path / "rgb.mp4").rename(tmp_path / "rgb.flow.mkv")
        FlowReader(tmp_path / "rgb.flow.mkv")


# ------------------------------------------------------------------------------------------- frame folders
def _write_flow_folder(folder, imgs, prefix=("flow_x_", "flow_y_"), ext=".png", start=1):
    folder.mkdir(parents=True, exist_ok=True)
    for t, img in enumerate(imgs):
        for k in range(2):
            Image.fromarray(img[..., k]).save(folder / f"{prefix[k]}{t + start:05d}{ext}")


def test_frame_folders_read_tsn_flow_and_rgb_layouts(tmp_path):
    imgs = _images(12)
    _write_flow_folder(tmp_path / "a", imgs)  # flow_x_00001.png ... (12 > 9: numerical, not text, order)
    _write_flow_folder(tmp_path / "b", imgs, prefix=("x_", "y_"), start=0)
    for name in ("a", "b"):
        with open_source(tmp_path / name, "flow") as r:
            assert isinstance(r, FrameFolder) and r.num_frames == 12
            np.testing.assert_array_equal(r.get_frames([10, 0, 3]), imgs[[10, 0, 3]])
            assert r.get_frames([1], size=(12, 16)).shape == (1, 12, 16, 2)
    # JPEG (what denseflow writes): lossy, but close
    _write_flow_folder(tmp_path / "j", imgs[:, ::1], ext=".jpg")
    got = FrameFolder(tmp_path / "j", "flow").get_frames(range(12)).astype(int)
    assert np.abs(got - imgs).mean() < 40  # random noise is JPEG's worst case; the layout is what is tested
    rgb = np.random.default_rng(1).integers(0, 256, (3, 16, 20, 3), dtype=np.uint8)
    for t, f in enumerate(rgb):
        Image.fromarray(f).save(tmp_path / "a" / f"img_{t + 1:05d}.png")
    np.testing.assert_array_equal(open_source(tmp_path / "a", "rgb").get_frames([2, 0]), rgb[[2, 0]])
    assert scan_frame_folder(tmp_path / "a").modalities == {"rgb", "flow"}
    assert source_stem(tmp_path / "a") == "a" and source_stem(tmp_path / "v_x.flow.mkv") == "v_x"
    assert [p.name for p in list_sources(tmp_path)] == ["a", "b", "j"]


def test_frame_folder_errors_name_the_problem(tmp_path):
    imgs = _images(3)
    _write_flow_folder(tmp_path / "mixed", imgs)
    Image.fromarray(imgs[0, ..., 0]).save(tmp_path / "mixed" / "x_00001.png")
    with pytest.raises(VideoReadError, match="mixes the image prefixes"):
        open_source(tmp_path / "mixed", "flow")
    _write_flow_folder(tmp_path / "odd", imgs)
    (tmp_path / "odd" / "flow_y_00003.png").unlink()
    with pytest.raises(VideoReadError, match="3 x flow images but 2 y flow images"):
        open_source(tmp_path / "odd", "flow")
    with pytest.raises(VideoReadError, match=r"no RGB frames .*\(it holds 3 x flow, 2 y flow"):
        open_source(tmp_path / "odd", "rgb")
    write_video(tmp_path / "v.mp4", np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(VideoReadError, match="an RGB video, but the model takes optical flow.*p3d flow"):
        open_source(tmp_path / "v.mp4", "flow")


# ---------------------------------------------------------------------------------------------- flow clips
def test_flow_flip_is_the_frame_flip_plus_x_negation():
    spec = flow_unit(clip_len=4, size=16)
    imgs = _images(4)
    flipped = hflip_frames(imgs, spec)
    np.testing.assert_array_equal(flipped[..., 1], imgs[:, :, ::-1, 1])
    np.testing.assert_array_equal(flipped[..., 0], 255 - imgs[:, :, ::-1, 0])
    np.testing.assert_array_equal(flipped, flip_flow_images(imgs))  # one implementation
    as_tensor = hflip_frames(torch.from_numpy(imgs), spec)
    np.testing.assert_array_equal(as_tensor.numpy(), flipped)
    # the flip of normalised clips agrees with normalising the flipped images
    torch.testing.assert_close(hflip(normalize(imgs, spec), spec), normalize(flipped, spec))
    # a flipped rightward flow points left: x below 128 where it was above
    right = np.full((1, 8, 8, 2), 128, np.uint8)
    right[..., 0] = 200
    assert (hflip_frames(right, spec)[..., 0] == 55).all()
    rgb = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(hflip_frames(rgb, imagenet_rgb(2, 8)), rgb[:, :, ::-1])


def test_training_clip_transform_on_flow_crops_and_flips_like_frames():
    spec = flow_unit(clip_len=3, size=(8, 8)).replace(resize=(8, 12))
    imgs = _images(3, 8, 12)
    seen = set()
    for seed in range(16):
        out = ClipTransform(spec, train=True).crop_flip(imgs, seed)
        assert out.shape == (3, 8, 8, 2)
        for left in range(5):
            if np.array_equal(out, imgs[:, :, left : left + 8]):
                seen.add("plain")
            if np.array_equal(out, hflip_frames(imgs[:, :, left : left + 8], spec)):
                seen.add("flipped")
    assert seen == {"plain", "flipped"}


def test_flow_frame_indices_pair_each_field_with_the_next_frame():
    np.testing.assert_array_equal(flow_frame_indices(np.array([0, 3, 7])), [0, 1, 3, 4, 7, 8])
    assert flow_frame_indices(np.zeros((2, 4), int)).shape == (2, 8)


def test_stored_flow_and_flow_from_rgb_give_the_same_model_input(tmp_path):
    """p3d flow at the model's resize, read as a flow clip, equals the flow computed on the fly from the frames."""
    write_video(tmp_path / "v.mp4", _moving(12, 32, 40, dx=2))
    spec = flow_unit(clip_len=4, size=(24, 32)).replace(resize=(32, 40))
    n = flow_video(tmp_path / "v.mp4", tmp_path / "v.flow.mkv", size=(32, 40), params=FAST)
    assert n == 11 and FlowReader(tmp_path / "v.flow.mkv").num_frames == 11
    stored = VideoClipsDataset([Sample(str(tmp_path / "v.flow.mkv"), (0,), "v")], spec, num_clips=3, raw=True)
    live = VideoClipsDataset(
        [Sample(str(tmp_path / "v.mp4"), (0,), "v")],
        spec,
        num_clips=3,
        raw=True,
        flow_from_rgb=FlowFromRGB(params=FAST),
    )
    a, b = stored[0], live[0]
    assert a["valid"] and b["valid"], (a["error"], b["error"])
    assert a["clips"].shape == (3, 4, 24, 32, 2) and b["clips"].shape == (3, 8, 32, 40, 3)
    xa, xb = stored.model_input_fn()(a["clips"]), live.model_input_fn()(b["clips"])
    assert xa.shape == xb.shape == (3, 2, 4, 24, 32)
    torch.testing.assert_close(xa, xb, rtol=0, atol=0)
    # and the flow has the motion's sign: the window slides right over the texture, so the content moves left
    assert a["clips"][..., 0].float().mean() < 125


def test_a_flow_model_given_rgb_videos_is_told_what_to_do(tmp_path):
    write_video(tmp_path / "v.mp4", _moving(6))
    spec = flow_unit(clip_len=2, size=16)
    with pytest.raises(ValueError, match="reads optical flow: compute it with `p3d flow`"):
        ClipDataset([Sample(str(tmp_path / "v.mp4"), (0,), "v")], spec)
    with pytest.raises(ValueError, match="flow_from_rgb needs a flow input spec"):
        VideoClipsDataset([Sample(str(tmp_path / "v.mp4"), (0,), "v")], imagenet_rgb(2, 16), raw=True,
                          flow_from_rgb=True)  # fmt: skip


# --------------------------------------------------------------------------------------------- the job
def test_flow_tree_is_resumable_reports_bad_files_and_mirrors_the_dataset(tmp_path):
    src = tmp_path / "src"
    (src / "A").mkdir(parents=True)
    write_video(src / "A" / "v1.mp4", _moving(6, dx=1))
    write_video(src / "A" / "v2.mp4", _moving(5, dx=-1, seed=1))
    (src / "A" / "broken.mp4").write_bytes(b"not a video at all")
    write_video(src / "A" / "one.mp4", _moving(1))
    frames = src / "B" / "clip"
    frames.mkdir(parents=True)
    for t, f in enumerate(_moving(4, seed=2)):
        Image.fromarray(f).save(frames / f"img_{t + 1:05d}.jpg")
    (src / "split.txt").write_text("A/v1.mp4 0\n")
    report = flow_tree(src, tmp_path / "dst", params=FAST, chunk=3)  # chunks smaller than a video
    assert report.written == 3 and report.fields == 5 + 4 + 3 and report.copied == 1
    assert sorted(p for p, _ in report.failed) == [str(src / "A" / "broken.mp4"), str(src / "A" / "one.mp4")]
    reasons = dict(report.failed)
    assert "at least 2 frames" in reasons[str(src / "A" / "one.mp4")]
    dst = tmp_path / "dst"
    assert sorted(p.relative_to(dst).as_posix() for p in list_sources(dst)) == [
        "A/v1.flow.mkv", "A/v2.flow.mkv", "B/clip.flow.mkv",
    ]  # fmt: skip
    assert (dst / "split.txt").read_text() == "A/v1.mp4 0\n"
    # chunked computation = the whole video at once
    whole = compute_flow(open_source(src / "A" / "v1.mp4").read_all(), params=FAST)
    np.testing.assert_array_equal(read_flow_file(dst / "A" / "v1.flow.mkv"), quantize_flow(whole).permute(0, 2, 3, 1))
    again = flow_tree(src, dst, params=FAST)
    assert again.written == 0 and again.skipped_existing == 3 and len(again.failed) == 2
    # the flow folder is a dataset root: the list's video resolves to its flow file
    assert samples_from_path(dst / "split.txt").samples[0].path == str(dst / "A" / "v1.flow.mkv")


def test_flow_tree_reads_a_list_and_checks_arguments(tmp_path):
    write_video(tmp_path / "v.mp4", _moving(4))
    (tmp_path / "list.txt").write_text("v.mp4\n")
    rep = flow_tree(tmp_path / "list.txt", tmp_path / "out", params=FAST, size=(16, 20))
    assert rep.written == 1 and FlowReader(tmp_path / "out" / "v.flow.mkv").get_frames([0]).shape == (1, 16, 20, 2)
    with pytest.raises(ValueError, match="outside the source folder"):
        flow_tree(tmp_path, tmp_path / "inside")
    with pytest.raises(ValueError, match="engine must be one of"):
        flow_tree(tmp_path / "list.txt", tmp_path / "o2", engine="farneback")
    with pytest.raises(FileNotFoundError):
        flow_tree(tmp_path / "nope", tmp_path / "o3")


def test_flow_labels_are_kept_in_class_folders(tmp_path):
    imgs = _images(6, 16, 16)
    for c in ("Left", "Right"):
        write_flow_file(tmp_path / c / f"v_{c}.flow.mkv", imgs)
    s = samples_from_path(tmp_path)
    assert s.classes == ["Left", "Right"] and [x.video_id for x in s.samples] == ["v_Left", "v_Right"]
    ds = ClipDataset(s, flow_unit(clip_len=4, size=8).replace(resize=(16, 16)))
    clip, label = ds[1]
    assert clip.shape == (2, 4, 8, 8) and label == 1


def test_flow_tree_in_parallel_processes_writes_the_same_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(3):
        write_video(src / f"v{k}.mp4", _moving(5, dx=k - 1, seed=k))
    one = flow_tree(src, tmp_path / "one", params=FAST)
    two = flow_tree(src, tmp_path / "two", params=FAST, workers=2, threads=1)
    assert one.written == two.written == 3 and not two.failed and two.fields == 12
    for k in range(3):
        name = f"v{k}.flow.mkv"
        np.testing.assert_array_equal(read_flow_file(tmp_path / "one" / name), read_flow_file(tmp_path / "two" / name))
