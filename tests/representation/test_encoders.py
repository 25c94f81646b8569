"""Encoders of local descriptors: FV and VLAD against hand computations, FV-VAE against autograd, a toy problem
where only the distribution of the descriptors carries the class, streaming, save/load and its errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from p3d.representation.encoders import (
    ENCODERS,
    FisherVectorEncoder,
    FVVAEEncoder,
    VLADEncoder,
    ids_digest,
    load_encoder,
    sample_descriptors,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # the networks here are tiny: one thread avoids OpenMP synchronisation on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spread_toy(n_videos: int, n_desc: int = 20, d: int = 6, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Two classes with the SAME mean descriptor: half of a video's descriptors sit at ``5 + r_c a``, half at
    ``5 - r_c a`` (a fixed unit direction, r_0 = 2, r_1 = 1), plus noise 0.5.  Only the spread tells the class."""
    rng = np.random.default_rng(seed)
    a = np.ones(d) / math.sqrt(d)
    sign = np.repeat([1.0, -1.0], n_desc // 2)[:, None]
    sets, labels = [], []
    for v in range(n_videos):
        c = v % 2
        x = 5.0 + sign * (2.0, 1.0)[c] * a + 0.5 * rng.standard_normal((n_desc, d))
        sets.append(x.astype(np.float32))
        labels.append(c)
    return sets, np.array(labels)


def _tiny_vae(**kw) -> FVVAEEncoder:
    args = dict(latent=4, hidden=(16,), dropout=0.0, steps=300, batch_size=64, lr=3e-3, seed=0)
    args.update(kw)
    return FVVAEEncoder(**args)


# ------------------------------------------------------------------------------------------------------------------
# sampling


def test_sample_descriptors_is_uniform_bounded_and_seeded():
    sizes = [7, 13, 1, 20, 19]  # 60 rows; row r holds the value r
    offsets = np.cumsum([0, *sizes])
    stream = [np.arange(offsets[i], offsets[i + 1], dtype=np.float32)[:, None].repeat(3, 1) for i in range(5)]
    counts = np.zeros(60)
    for seed in range(3000):
        s = sample_descriptors(iter(stream), 15, seed)
        assert s.shape == (15, 3) and s.dtype == np.float32
        rows = s[:, 0].astype(int)
        assert len(set(rows)) == 15  # distinct rows of the stream, intact
        np.testing.assert_array_equal(s, stream_rows(stream)[rows])
        counts[rows] += 1
    # every row is kept with probability 15 / 60; binomial std over 3000 draws ~ 0.008
    np.testing.assert_allclose(counts / 3000, 0.25, atol=0.04)
    np.testing.assert_array_equal(sample_descriptors(stream, 15, 7), sample_descriptors(stream, 15, 7))
    assert not np.array_equal(sample_descriptors(stream, 15, 7), sample_descriptors(stream, 15, 8))
    # a stream shorter than the reservoir comes back whole, in order
    np.testing.assert_array_equal(sample_descriptors(stream, 100, 0), stream_rows(stream))


def stream_rows(stream: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(stream)


def test_sample_descriptors_bad_input():
    with pytest.raises(ValueError, match="max_descriptors"):
        sample_descriptors([np.zeros((2, 3))], 0)
    with pytest.raises(ValueError, match="array 1: descriptors are 4-d"):
        sample_descriptors([np.zeros((2, 3)), np.zeros((2, 4))], 5)
    with pytest.raises(ValueError, match="array 0: descriptors must be 2-D"):
        sample_descriptors([np.zeros(3)], 5)
    with pytest.raises(ValueError, match="no arrays"):
        sample_descriptors([], 5)


# ------------------------------------------------------------------------------------------------------------------
# Fisher vector against a hand computation

W = np.array([0.3, 0.7])
MU = np.array([[0.0, 0.0], [2.0, 1.0]])
VAR = np.array([[1.0, 0.5], [2.0, 1.0]])
X = np.array([[0.5, 0.2], [1.5, 1.0], [-0.3, 0.4]])


def _gauss(x, mu, var):
    return np.prod([math.exp(-((x[d] - mu[d]) ** 2) / (2 * var[d])) / math.sqrt(2 * math.pi * var[d]) for d in (0, 1)])


def _loglik(w, mu, var):
    return np.mean([math.log(sum(w[k] * _gauss(x, mu[k], var[k]) for k in (0, 1))) for x in X])


def test_fisher_vector_matches_hand_computed_gradients():
    n = len(X)
    q = np.array([[W[k] * _gauss(x, MU[k], VAR[k]) for k in (0, 1)] for x in X])
    q /= q.sum(1, keepdims=True)
    u = np.zeros((2, 2))
    v = np.zeros((2, 2))
    for k in (0, 1):
        for d in (0, 1):
            sd = math.sqrt(VAR[k, d])
            for i in range(n):
                t = (X[i, d] - MU[k, d]) / sd
                u[k, d] += q[i, k] * t / (n * math.sqrt(W[k]))
                v[k, d] += q[i, k] * (t * t - 1) / (n * math.sqrt(2 * W[k]))
    raw = np.concatenate([u.ravel(), v.ravel()])
    # the same numbers as normalised gradients of the mean log-likelihood (central differences)
    h = 1e-6
    for k in (0, 1):
        for d in (0, 1):
            mu_p, mu_m = MU.copy(), MU.copy()
            mu_p[k, d] += h
            mu_m[k, d] -= h
            g_mu = (_loglik(W, mu_p, VAR) - _loglik(W, mu_m, VAR)) / (2 * h)
            sd = math.sqrt(VAR[k, d])
            var_p, var_m = VAR.copy(), VAR.copy()
            var_p[k, d] = (sd + h) ** 2
            var_m[k, d] = (sd - h) ** 2
            g_sigma = (_loglik(W, MU, var_p) - _loglik(W, MU, var_m)) / (2 * h)
            assert u[k, d] == pytest.approx(g_mu * sd / math.sqrt(W[k]), rel=1e-5)
            assert v[k, d] == pytest.approx(g_sigma * sd / math.sqrt(2 * W[k]), rel=1e-5)

    plain = FisherVectorEncoder.from_gmm(W, MU, VAR, power=None)
    assert plain.dim == 8
    np.testing.assert_allclose(plain.encode(X), raw / np.linalg.norm(raw), rtol=1e-5, atol=1e-7)
    improved = FisherVectorEncoder.from_gmm(W, MU, VAR)  # signed square root, then L2
    ssr = np.sign(raw) * np.sqrt(np.abs(raw))
    np.testing.assert_allclose(improved.encode(X), ssr / np.linalg.norm(ssr), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(improved.posteriors(X), q, rtol=1e-10)


# ------------------------------------------------------------------------------------------------------------------
# VLAD against a hand computation


def test_vlad_matches_hand_computation():
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [10.0, 10.0]])
    x = np.array([[1.0, 1.0], [-1.0, 0.5], [3.0, 0.0], [5.0, 2.0], [0.5, -0.5]])
    # nearest centres by hand: 0, 0, 1, 1, 0; centre 2 is empty
    v0 = np.array([1 + -1 + 0.5, 1 + 0.5 - 0.5])  # residuals to (0, 0): (0.5, 1.0)
    v1 = np.array([(3 - 4) + (5 - 4), 0 + 2])  # residuals to (4, 0): (0, 2)
    v2 = np.zeros(2)
    enc = VLADEncoder.from_centres(centres)
    np.testing.assert_array_equal(enc.assign(x), [0, 0, 1, 1, 0])
    intra = np.concatenate([v0 / np.linalg.norm(v0), v1 / np.linalg.norm(v1), v2])
    np.testing.assert_allclose(enc.encode(x), intra / np.linalg.norm(intra), rtol=1e-6)
    by_hand = [0.5 / math.sqrt(2.5), 1 / math.sqrt(2.5), 0, 1 / math.sqrt(2), 0, 0]  # (v0/|v0|, v1/|v1|, 0) / sqrt(2)
    np.testing.assert_allclose(enc.encode(x), by_hand, rtol=1e-6, atol=1e-12)
    raw = np.concatenate([v0, v1, v2])
    no_intra = VLADEncoder.from_centres(centres, intra_norm=False)
    np.testing.assert_allclose(no_intra.encode(x), raw / np.linalg.norm(raw), rtol=1e-6)
    powered = VLADEncoder.from_centres(centres, power=0.5)
    p = np.sqrt(intra)
    np.testing.assert_allclose(powered.encode(x), p / np.linalg.norm(p), rtol=1e-6)


# ------------------------------------------------------------------------------------------------------------------
# FV-VAE


def test_fv_vae_shapes_and_determinism():
    sets, _ = _spread_toy(12)
    sample = np.concatenate(sets)
    a = _tiny_vae(steps=150).fit(sample)
    b = _tiny_vae(steps=150).fit(sample)
    c = _tiny_vae(steps=150, seed=1).fit(sample)
    assert a.dim == 6 * (4 + 1)
    v = a.encode(sets[0])
    assert v.shape == (30,) and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(v, b.encode(sets[0]))
    assert not np.allclose(v, c.encode(sets[0]))
    many = a.encode_many(sets)
    assert many.shape == (12, 30)
    np.testing.assert_allclose(many[3], a.encode(sets[3]), atol=1e-6)
    assert len(a.history["loss"]) == 150 and a.history["rec"][-1] < a.history["rec"][0]


def _autograd_scores(enc: FVVAEEncoder, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and mean square over descriptors of d log p(x|z) / d(decoder W, b), one descriptor at a time with
    torch.autograd.grad, the encoder MLP and the Gaussian written out here from the stored parameters."""
    p = enc.params
    w = p["decoder.weight"].clone().requires_grad_(True)
    b = p["decoder.bias"].clone().requires_grad_(True)
    s_x = p["x_log_sigma"].clamp_min(math.log(enc.sigma_floor)).exp()
    grads = []
    for x in torch.from_numpy(local.astype(np.float32) * np.float32(enc.scale)):
        h = torch.relu(p["encoder.0.weight"] @ x + p["encoder.0.bias"])
        z = p["encoder.1.weight"] @ h + p["encoder.1.bias"]
        log_p = torch.distributions.Normal(torch.relu(w @ z + b), s_x).log_prob(x).sum()
        g_w, g_b = torch.autograd.grad(log_p, [w, b])
        grads.append(torch.cat([g_w, g_b[:, None]], 1).reshape(-1).numpy())
    g = np.stack(grads).astype(np.float64)
    return g.mean(0), (g * g).mean(0)


def test_fv_vae_encoding_is_the_autograd_gradient():
    rng = np.random.default_rng(0)
    fit_sample = np.maximum(rng.normal(0.3, 1.0, (60, 6)), 0).astype(np.float32)  # sparse, like ReLU outputs
    enc = _tiny_vae(steps=100).fit(fit_sample)
    # the Fisher information is the mean squared per-descriptor gradient over the fitting sample
    _, fim = _autograd_scores(enc, fit_sample)
    np.testing.assert_allclose(enc.params["fim"].numpy().ravel(), fim, rtol=2e-4, atol=1e-9)
    # shift the decoder so that both sides of its output ReLU occur, then compare one video's encoding
    local = np.maximum(rng.normal(0.3, 1.0, (16, 6)), 0).astype(np.float32)
    z = enc._encoder(torch.from_numpy(local * np.float32(enc.scale)))
    # midway between the two middle pre-activations of each dimension: half on each side, none at 0
    enc.params["decoder.bias"] -= torch.quantile(enc._decoder_pre(z), 0.5, dim=0)
    assert 0.3 < float((enc._decoder_pre(z) <= 0).float().mean()) < 0.7
    mean_g, _ = _autograd_scores(enc, local)
    np.testing.assert_allclose(enc.scores(local), mean_g, rtol=2e-4, atol=1e-6)
    expected = mean_g / np.sqrt(enc.params["fim"].numpy().astype(np.float64).ravel())
    expected = np.sign(expected) * np.sqrt(np.abs(expected))
    np.testing.assert_allclose(enc.encode(local), expected / np.linalg.norm(expected), rtol=1e-3, atol=1e-6)


def _cross_entropy(enc: FVVAEEncoder, sets, labels) -> float:
    ce = []
    for x, y in zip(sets, labels, strict=True):
        s = enc.class_scores(x).astype(np.float64)
        ce.append(np.log(np.exp(s - s.max()).sum()) + s.max() - s[y])
    return float(np.mean(ce))


def test_fv_vae_end_to_end_stage_lowers_the_classification_loss():
    rng = np.random.default_rng(0)
    centres = 3.0 + 1.5 * np.eye(3, 6)  # class c: descriptors around its own centre (a separable problem)
    labels = np.arange(30) % 3
    sets = [(centres[c] + 0.3 * rng.standard_normal((12, 6))).astype(np.float32) for c in labels]
    args = dict(steps=200, sets_per_batch=6, descriptors_per_set=8, lr=1e-2)
    before = _tiny_vae(finetune_steps=0, **args).fit(sets, labels)
    after = _tiny_vae(finetune_steps=150, **args).fit(sets, labels)
    ce0, ce1 = _cross_entropy(before, sets, labels), _cross_entropy(after, sets, labels)
    assert ce1 < 0.5 * ce0 and ce1 < 0.3, (ce0, ce1)
    assert np.mean([after.class_scores(x).argmax() == y for x, y in zip(sets, labels, strict=True)]) == 1.0
    assert after.num_classes == 3 and after.fitted_on["videos"] == 30
    cls = np.array(after.history["cls"][200:])
    assert len(cls) == 150 and np.isnan(after.history["cls"][:200]).all()
    with pytest.raises(ValueError, match="one label per video"):
        _tiny_vae().fit(sets, labels[:-1])
    with pytest.raises(ValueError, match="one \\(n_i, D\\) array per video"):
        _tiny_vae().fit(np.concatenate(sets), labels)
    with pytest.raises(ValueError, match=r"sample\[1\]: expected \(n >= 1, 6\) descriptors, got \(0, 6\)"):
        _tiny_vae(steps=1, finetune_steps=1, sets_per_batch=2).fit([np.ones((3, 6)), np.zeros((0, 6))], [0, 1])
    with pytest.raises(ValueError, match="without labels"):
        _tiny_vae(steps=5).fit(np.concatenate(sets)).class_scores(sets[0])


# ------------------------------------------------------------------------------------------------------------------
# the point of it all: the class lives in the distribution of the descriptors, not in their mean


def test_encoders_beat_mean_pooling_when_the_class_is_in_the_distribution():
    from sklearn.svm import LinearSVC

    train, y_train = _spread_toy(80, n_desc=40, seed=0)
    test, y_test = _spread_toy(80, n_desc=40, seed=1)
    sample = np.concatenate(train)  # fitted on training videos only

    def accuracy(f_train, f_test) -> float:
        clf = LinearSVC(C=1.0, max_iter=20000).fit(f_train, y_train)
        return float((clf.predict(f_test) == y_test).mean())

    mean_acc = accuracy(np.stack([s.mean(0) for s in train]), np.stack([s.mean(0) for s in test]))
    assert mean_acc < 0.7  # the mean descriptor carries no class information (chance: 0.5)
    # a codebook coarser than the modes (2 centres for 4 modes), as with real descriptors
    encoders = [FisherVectorEncoder(components=2), VLADEncoder(centres=2)]
    encoders.append(_tiny_vae(latent=8, hidden=(32,), steps=1500, batch_size=128))
    for enc, floor in zip(encoders, (0.9, 0.9, 0.85), strict=True):
        enc.fit(sample)
        acc = accuracy(enc.encode_many(train), enc.encode_many(test))
        assert acc >= floor, (type(enc).__name__, acc, mean_acc)


# ------------------------------------------------------------------------------------------------------------------
# streaming, provenance, save/load


def _fitted_encoders() -> list:
    sets, labels = _spread_toy(10)
    sample = np.concatenate(sets)
    ids = [f"class{c}/v{i}" for i, c in enumerate(labels)]
    return [
        FisherVectorEncoder(components=2, pca_dim=3, whiten=True).fit(sample, ids=ids),
        VLADEncoder(centres=3, pca_dim=4, power=0.5).fit(sample, ids=ids),
        _tiny_vae(steps=20, finetune_steps=5, sets_per_batch=4, dropout=0.5).fit(sets, labels, ids=ids),
    ]


def test_encode_many_streams_in_bounded_blocks_and_matches_single_encodes(tmp_path):
    sets, _ = _spread_toy(9)
    sets = [s[: 4 + i] for i, s in enumerate(sets)]  # videos of different lengths
    for enc in _fitted_encoders():
        single = np.stack([enc.encode(s) for s in sets])
        np.testing.assert_allclose(enc.encode_many(sets), single, atol=1e-6)
        blocks = list(enc.iter_encode((s for s in sets), batch_descriptors=20))
        assert [len(b) for b in blocks] == [4, 3, 2]  # 4+5+6+7 = 22, 8+9+10 = 27, 11+12: a video is never split
        np.testing.assert_allclose(np.concatenate(blocks), single, atol=1e-6)
        out = np.lib.format.open_memmap(tmp_path / f"{enc.kind}.npy", "w+", np.float32, (len(sets), enc.dim))
        assert enc.encode_many(iter(sets), out=out, batch_descriptors=1) is out
        np.testing.assert_allclose(np.asarray(out), single, atol=1e-6)
        with pytest.raises(ValueError, match="out: has 3 rows"):
            enc.encode_many(sets, out=np.empty((3, enc.dim), np.float32))


def test_bad_descriptors_and_unfitted_encoders_are_refused():
    fv = _fitted_encoders()[0]
    with pytest.raises(ValueError, match=r"expected local descriptors of shape \(n, 6\), got \(4, 5\)"):
        fv.encode(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least one local descriptor"):
        fv.encode(np.zeros((0, 6)))
    with pytest.raises(ValueError, match="video 1: local descriptors contain NaN"):
        fv.encode_many([np.ones((2, 6)), np.full((2, 6), np.nan)])
    for cls in ENCODERS.values():
        with pytest.raises(ValueError, match="not fitted"):
            cls().encode(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="pca_dim=8"):
        FisherVectorEncoder(components=2, pca_dim=8).fit(np.random.default_rng(0).random((50, 6)))
    with pytest.raises(ValueError, match="components must be >= 1"):
        FisherVectorEncoder(components=0)
    with pytest.raises(ValueError, match="cannot fit 5 centres"):
        VLADEncoder(centres=5).fit(np.zeros((3, 2)))


def test_fit_records_what_it_was_fitted_on():
    fv, vlad, vae = _fitted_encoders()
    sets, labels = _spread_toy(10)
    ids = [f"class{c}/v{i}" for i, c in enumerate(labels)]
    for enc in (fv, vlad, vae):
        assert enc.fitted_on["videos"] == 10
        assert enc.fitted_on["ids_sha256"] == ids_digest(reversed(ids)) == ids_digest(ids)
    assert fv.fitted_on["descriptors"] == 200
    assert ids_digest(ids[:-1]) != ids_digest(ids)
    plain = FisherVectorEncoder(components=2).fit(np.concatenate(sets))
    assert plain.fitted_on == {"descriptors": 200, "videos": None, "ids_sha256": None}


def test_save_load_round_trip_gives_identical_encodings(tmp_path):
    sets, _ = _spread_toy(4)
    for enc in _fitted_encoders():
        path = enc.save(tmp_path / f"{enc.kind}.safetensors")
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
        back = load_encoder(path)
        assert type(back) is type(enc) and back.config() == enc.config() and back.dim == enc.dim
        assert back.fitted_on == enc.fitted_on
        np.testing.assert_array_equal(back.encode_many(sets), enc.encode_many(sets))
    np.testing.assert_array_equal(back.class_scores(sets[0]), enc.class_scores(sets[0]))


def _rewrite(path, arrays=None, header_edit=None):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save

    from p3d.representation.encoders import FORMAT

    with safe_open(str(path), framework="np") as f:
        md = f.metadata()
    arrays = load_file(str(path)) if arrays is None else arrays
    if header_edit:
        h = json.loads(md["encoder"])
        header_edit(h)
        md["encoder"] = json.dumps(h)
    assert md["format"] == FORMAT
    path.write_bytes(save(arrays, metadata=md))


def test_corrupt_or_missing_encoder_files_give_one_line_errors(tmp_path):
    from safetensors.numpy import load_file, save

    fv = _fitted_encoders()[0]
    good = fv.save(tmp_path / "good.safetensors")
    data = good.read_bytes()
    cases = {}

    def case(name, content=None):
        p = tmp_path / f"{name}.safetensors"
        if content is not None:
            p.write_bytes(content)
        cases[name] = p
        return p

    case("truncated", data[: len(data) // 2])
    case("garbage", b"\x00\x01not a safetensors file at all")
    case("foreign", save({"pool5": np.zeros((2, 3), np.float32)}, metadata={"format": "p3d-features"}))
    arrays = load_file(str(good))
    missing = case("missing_array", data)
    _rewrite(missing, {k: v for k, v in arrays.items() if k != "variances"})
    shape = case("bad_shape", data)
    _rewrite(shape, {**arrays, "means": np.zeros((2, 5))})
    unknown = case("unknown_class", data)
    _rewrite(unknown, header_edit=lambda h: h.update({"class": "bag-of-words"}))
    expect = {
        "truncated": "not a readable safetensors file",
        "garbage": "not a readable safetensors file",
        "foreign": "not a p3d encoder file",
        "missing_array": "arrays missing \\['variances'\\]",
        "bad_shape": "array 'means' has shape \\(2, 5\\), expected \\(2, 3\\)",
        "unknown_class": "unknown encoder class 'bag-of-words'",
    }
    for name, p in cases.items():
        with pytest.raises(ValueError, match=expect[name]) as e:
            load_encoder(p)
        msg = str(e.value)
        assert str(p) in msg and "\n" not in msg, msg
    with pytest.raises(FileNotFoundError, match="no such encoder file") as e:
        load_encoder(tmp_path / "absent.safetensors")
    assert "absent.safetensors" in str(e.value)
