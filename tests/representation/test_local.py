"""Local descriptors: positions and the spatial pyramid against hand-made windows (FV-VAE's frame pyramid), the
flip, the store's local row group and its lazy reader, extraction against a direct forward, and the one-time PCA."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from p3d.data import VideoClipsDataset, build_samples, make_synthetic_dataset, video_ids
from p3d.models import create_model
from p3d.representation.encoders import ids_digest
from p3d.representation.extract import build_meta, extract_features, fit_local_pca
from p3d.representation.local import (
    PCA_NAME,
    LocalPCA,
    LocalSet,
    LocalSpec,
    disk_cost,
    iter_local,
    local_descriptors,
    parse_pyramid,
    pca_videos,
)
from p3d.representation.store import FeatureWriter, list_parts, merge_features, read_features
from p3d.spec import InputSpec

SPEC = InputSpec(clip_len=8, size=(48, 48), resize=(56, 56))
META = {"model": "p3d63", "layers": ["pool5"], "input_spec": {"clip_len": 16}, "num_clips": 3, "flip": False}


# ------------------------------------------------------------------------------------------------------------------
# positions, pyramid, flip


def _windows(m: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Max over ``size x size`` windows with ``stride`` of a ``(C, H, W)`` map -> ``(cells, C)`` row-major."""
    c, h, w = m.shape
    out = []
    for i in range(0, h - size + 1, stride):
        for j in range(0, w - size + 1, stride):
            out.append(m[:, i : i + size, j : j + size].max(axis=(1, 2)))
    return np.array(out)


def test_every_position_is_a_descriptor_in_t_h_w_order():
    maps = np.random.default_rng(0).standard_normal((2, 3, 2, 5, 4)).astype(np.float32)  # (N, C, T, H, W)
    x = local_descriptors(maps)
    assert x.shape == (2, 2 * 5 * 4, 3)
    for n, t, h, w in [(0, 0, 0, 0), (1, 1, 4, 3), (0, 1, 2, 1)]:
        np.testing.assert_array_equal(x[n, t * 20 + h * 4 + w], maps[n, :, t, h, w])


def test_pyramid_reproduces_the_fv_vae_frame_windows():
    """FV-VAE's activations_spp.m on a 7x7 map: 2x2 windows stride 1, 3x3 stride 2, 4x4 stride 3, global max."""
    m = np.random.default_rng(1).standard_normal((1, 6, 1, 7, 7)).astype(np.float32)
    x = local_descriptors(m, (6, 3, 2, 1))[0]
    expected = np.concatenate(
        [_windows(m[0, :, 0], 2, 1), _windows(m[0, :, 0], 3, 2), _windows(m[0, :, 0], 4, 3), _windows(m[0, :, 0], 7, 1)]
    )
    assert x.shape == expected.shape == (50, 6)
    np.testing.assert_array_equal(x, expected)
    # res5c's 5x5 with levels (4, 2, 1): 2x2 windows stride 1, 3x3 stride 2, the global max -> 21 per clip
    r = np.random.default_rng(2).standard_normal((1, 4, 2, 5, 5)).astype(np.float32)  # T' = 2: per time step
    y = local_descriptors(r, (4, 2, 1))[0]
    assert y.shape == (2 * 21, 4) and LocalSpec(pyramid=(4, 2, 1)).positions(2, 5, 5) == 42
    for t in range(2):
        mt = r[0, :, t]
        want = np.concatenate([_windows(mt, 2, 1), _windows(mt, 3, 2), _windows(mt, 5, 1)])
        np.testing.assert_array_equal(y[21 * t : 21 * (t + 1)], want)


@pytest.mark.parametrize("pyramid", [(), (2, 1), (4, 2, 1)])
def test_flip_averages_cells_with_the_mirrored_cells(pyramid):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4, 1, 5, 5)).astype(np.float32)
    # a mirrored clip whose map is the exact mirror: the realigned average is the clip itself
    same = local_descriptors(np.concatenate([a, a[..., ::-1]]), pyramid, flip_of=3)
    np.testing.assert_allclose(same, local_descriptors(a, pyramid), rtol=1e-6)
    b = rng.standard_normal(a.shape).astype(np.float32)
    mixed = local_descriptors(np.concatenate([a, b]), pyramid, flip_of=3)
    want = 0.5 * (local_descriptors(a, pyramid) + local_descriptors(np.ascontiguousarray(b[..., ::-1]), pyramid))
    np.testing.assert_allclose(mixed, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="expected 4 maps"):
        local_descriptors(a, pyramid, flip_of=2)


def test_spec_validation_and_pyramid_parsing():
    assert parse_pyramid("4,2,1") == (4, 2, 1) and parse_pyramid(" 2, 1 ") == (2, 1)
    for bad in ("a,b", "", ","):
        with pytest.raises(ValueError, match="--local-pyramid"):
            parse_pyramid(bad)
    with pytest.raises(ValueError, match="distinct grid sizes"):
        LocalSpec(pyramid=(2, 2))
    with pytest.raises(ValueError, match="PCA dimension"):
        LocalSpec(pca_dim=0)
    assert LocalSpec.from_meta(LocalSpec("res4_last", (2, 1), 8, 5, 100, 3).to_meta()) == LocalSpec(
        "res4_last", (2, 1), 8, 5, 100, 3
    )
    # UCF101 at 160x160, 20 clips, res5c 5x5 (README): 2.05 MB per video, 27.3 GB; PCA 256: 3.5 GB
    assert disk_cost(20, 25, 2048) == 2_053_000 and round(disk_cost(20, 25, 2048, 13320) / 1e9, 1) == 27.3
    assert round(disk_cost(20, 25, 256, 13320) / 1e9, 1) == 3.5
    np.testing.assert_array_equal(pca_videos(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(pca_videos(3, 100), [0, 1, 2])


# ------------------------------------------------------------------------------------------------------------------
# the store's row group and the reader


def _local_meta(layer: str = "res5c") -> dict:
    return {**META, "local": LocalSpec(layer).to_meta()}


def _descriptors(i: int, clips: int, positions: int = 4, d: int = 6) -> np.ndarray:
    rng = np.random.default_rng(i)
    return (rng.standard_normal((clips, positions, d)) * 3 + i).astype(np.float32)


def test_local_row_group_round_trip_lazy_reader_and_merge(tmp_path):
    store = tmp_path / "st"
    clips = [2, 3, 1, 2, 2]
    with FeatureWriter(store, _local_meta(), flush_every=2) as w:
        for i, c in enumerate(clips):
            w.add(
                f"c{i % 2}/v{i}", {"pool5": np.full(5, i, np.float32)}, label=i % 2, local={"res5c": _descriptors(i, c)}
            )
        w.add_bad("c0/broken", "no video stream")
    assert len(list_parts(store)) == 3
    s = LocalSet(store)
    assert s.ids == [f"c{i % 2}/v{i}" for i in range(5)] and s.dim == 6 and s.layer == "res5c"
    np.testing.assert_array_equal(s.labels, [0, 1, 0, 1, 0])
    assert s.bad == {"c0/broken": "no video stream"} and s.descriptors == 4 * sum(clips)
    for i, c in enumerate(clips):
        want = _descriptors(i, c).reshape(-1, 6).astype(np.float16).astype(np.float32)  # stored as float16
        assert s.count(i) == 4 * c and s[i].dtype == np.float32
        np.testing.assert_array_equal(s[i], want)
    np.testing.assert_array_equal(s[-1], s[4])
    # the row group as stored: float16 rows, the video row and the clip number of each
    from safetensors.numpy import load_file

    t = load_file(str(list_parts(store)[0]))
    assert t["local.res5c"].dtype == np.float16 and t["local.res5c"].shape == (4 * (2 + 3), 6)
    np.testing.assert_array_equal(t["local_video"], [0] * 8 + [1] * 12)
    np.testing.assert_array_equal(t["local_clip"], [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4 + [2] * 4)
    assert t["local_clip"].dtype == np.int16
    # a subset view keeps the given order; iter_local streams (id, label, descriptors)
    sub = s.subset(["c0/v4", "c1/v1"])
    assert sub.ids == ["c0/v4", "c1/v1"] and len(sub) == 2
    np.testing.assert_array_equal(sub[1], s[1])
    got = list(iter_local(store, ids=["c1/v3"]))
    assert [(v, lab) for v, lab, _ in got] == [("c1/v3", 1)] and got[0][2].shape == (8, 6)
    with pytest.raises(ValueError, match="1 video id"):
        s.subset(["nope"])
    # read_features ignores the row group; a merged file leaves it out, and the reader says so
    fs = read_features(store)
    assert fs.ids == s.ids and set(fs.video) == {"pool5"}
    merged = merge_features(store, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="merge-features` does not copy"):
        LocalSet(merged)
    with pytest.raises(ValueError, match="not 'res4_last'"):
        LocalSet(store, layer="res4_last")


def test_writer_refuses_inconsistent_local_descriptors(tmp_path):
    with FeatureWriter(tmp_path / "a", META) as w:
        with pytest.raises(ValueError, match="meta has no 'local'"):
            w.add("v", {"pool5": np.zeros(3)}, local={"res5c": _descriptors(0, 1)})
    with FeatureWriter(tmp_path / "b", _local_meta()) as w:
        with pytest.raises(ValueError, match="layer 'res5c' only"):
            w.add("v", {"pool5": np.zeros(3)})
        with pytest.raises(ValueError, match="clips, positions"):
            w.add("v", {"pool5": np.zeros(3)}, local={"res5c": np.zeros((4, 6))})
        with pytest.raises(ValueError, match="not finite in float16"):
            w.add("v", {"pool5": np.zeros(3)}, local={"res5c": np.full((1, 2, 6), 1e6)})
        w.add("v", {"pool5": np.zeros(3)}, local={"res5c": _descriptors(0, 1)})
        with pytest.raises(ValueError, match="D=6"):
            w.add("w", {"pool5": np.zeros(3)}, local={"res5c": np.zeros((1, 2, 5))})
    # a store never mixes videos with and without local descriptors (nor two kinds of them)
    with pytest.raises(ValueError, match="local: stored"):
        FeatureWriter(tmp_path / "b", META)
    with pytest.raises(ValueError, match="local: stored"):
        FeatureWriter(tmp_path / "b", _local_meta("res4_last"))
    with pytest.raises(ValueError, match="holds no local descriptors"):
        LocalSet(tmp_path / "a")


def test_writer_flushes_by_local_bytes(tmp_path):
    with FeatureWriter(tmp_path / "s", _local_meta(), flush_every=100, flush_local_bytes=200) as w:
        for i in range(4):
            w.add(f"v{i}", {"pool5": np.zeros(3)}, local={"res5c": _descriptors(i, 2)})  # 2*4*6*2 = 96 bytes each
    parts = list_parts(tmp_path / "s")
    assert [len(json.loads(_header(p)["ids"])) for p in parts] == [3, 1]  # flushed at 288 >= 200 bytes, then closed


def _header(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return f.metadata()


# ------------------------------------------------------------------------------------------------------------------
# extraction


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_classes=2, videos_per_class=4, num_frames=20, size=(64, 64), seed=0)
    return build_samples("ucf101", root, split=1, subset="train")


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("p3d63", width=4, layers=(1, 1, 1, 1), num_classes=2, input_spec=SPEC).eval()


def _extract(model, samples, out, local: LocalSpec, **kw):
    num_clips, flip = kw.pop("num_clips", 2), kw.pop("flip", False)
    meta = build_meta(
        model, ["pool5"], num_clips=num_clips, flip=flip, map_pooling="max", class_names=None, local=local
    )
    args = {"layers": ["pool5"], "num_clips": num_clips, "flip": flip, "batch_size": 3, "num_workers": 0}
    return extract_features(model, samples, out, meta, progress=False, local=local, **args, **kw)


def _reference_maps(model, sample, num_clips: int, flip: bool) -> np.ndarray:
    clips = VideoClipsDataset([sample], SPEC, num_clips=num_clips)[0]["clips"]
    if flip:
        clips = torch.cat([clips, clips.flip(-1)])
    with torch.inference_mode():
        return model.forward_layers(clips, ["res5c"])["res5c"].numpy()


@pytest.mark.parametrize(("pyramid", "flip"), [((), False), ((2, 1), True)])
def test_extracted_local_descriptors_match_a_direct_forward(samples, tmp_path, pyramid, flip):
    model = tiny()
    stats = _extract(model, samples, tmp_path / "s", LocalSpec("res5c", pyramid), flip=flip)
    assert stats.written == len(samples) and not stats.bad
    s = LocalSet(tmp_path / "s")
    assert s.ids == video_ids(list(samples)) and s.dim == 128  # tiny p3d63: res5c 128 x 1 x 2 x 2 at 48 x 48
    per_clip = 5 if pyramid else 4
    for i in (0, len(samples) - 1):
        maps = _reference_maps(model, samples[i], 2, flip)
        want = local_descriptors(maps, pyramid, 2 if flip else None).reshape(-1, 128)
        assert s[i].shape == (2 * per_clip, 128)
        np.testing.assert_allclose(s[i], want, rtol=2e-3, atol=1e-3)  # float16 storage
    if not pyramid:  # pool5 is the average of res5c: the stored local rows reproduce the video's pool5
        fs = read_features(tmp_path / "s")
        np.testing.assert_allclose(s[1].mean(0), fs.video["pool5"][1], rtol=5e-3, atol=1e-3)


def test_local_pca_is_fitted_once_on_spread_videos_and_reused(samples, tmp_path, monkeypatch):
    model = tiny()
    spec = LocalSpec("res5c", pca_dim=6, pca_videos=3, pca_descriptors=1000)
    out = tmp_path / "s"
    calls = []

    def stop_after(n):
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed after its first videos: the PCA is saved, some parts too
        _extract(model, samples, out, spec, flush_every=1, on_batch=stop_after)
    pca = LocalPCA.load(out / PCA_NAME)
    picked = [video_ids(list(samples))[i] for i in pca_videos(len(samples), 3)]
    assert pca.info["fitted_on"] == {"videos": 3, "descriptors": 3 * 2 * 4, "ids_sha256": ids_digest(picked)}
    assert pca.dim == 6 and pca.input_dim == 128
    written_before = len(read_features(out))
    assert 0 < written_before < len(samples)
    before = (out / PCA_NAME).read_bytes()

    def no_refit(*a, **k):
        raise AssertionError("the PCA was fitted again")

    monkeypatch.setattr(LocalPCA, "fit", no_refit)
    stats = _extract(model, samples, out, spec)
    assert stats.written == len(samples) - written_before and (out / PCA_NAME).read_bytes() == before
    monkeypatch.undo()

    # every stored row is the PCA of the raw descriptors (computed without PCA in another store)
    _extract(model, samples, tmp_path / "raw", LocalSpec("res5c"))
    raw, red = LocalSet(tmp_path / "raw"), LocalSet(out)
    assert red.dim == 6
    for i in range(len(red)):
        np.testing.assert_allclose(red[i], pca(raw[i]), rtol=1e-2, atol=2e-2)
    # the projection is the covariance's leading eigenvectors (orthonormal)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(6), atol=1e-5)

    # its file gone while parts exist: never fitted again
    (out / PCA_NAME).unlink()
    with pytest.raises(ValueError, match="cannot be fitted again"):
        fit_local_pca(model, samples, out, spec, num_clips=2, num_workers=0)
    # other ranks load it and never fit it
    with pytest.raises(FileNotFoundError, match="no such local PCA file"):
        _extract(model, samples, tmp_path / "r1", spec, rank=1, world_size=2)


def test_local_layer_must_be_a_map_and_meta_must_describe_it(samples, tmp_path):
    model = tiny()
    with pytest.raises(ValueError, match="--local pool5: not a conv map"):
        _extract(model, samples, tmp_path / "a", LocalSpec("pool5"))
    meta = build_meta(model, ["pool5"], num_clips=2, flip=False, map_pooling="max", class_names=None)
    with pytest.raises(ValueError, match="meta\\['local'\\]"):
        extract_features(model, samples, tmp_path / "b", meta, local=LocalSpec(), num_workers=0, progress=False)
    assert json.dumps(LocalSpec(pca_dim=4).to_meta())  # JSON-able provenance
