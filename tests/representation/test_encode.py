"""``p3d encode``: fitting sees the training videos only (poisoned test videos change nothing), the encoded store
holds exactly the encoder's encodings with their provenance, resume and reuse of a fitted encoder, the CLI chain
extract --local -> encode -> svm, and one-line errors for bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from p3d.cli import main
from p3d.data import make_synthetic_dataset
from p3d.representation import encode as encode_mod
from p3d.representation.encode import ENCODER_NAME, encode_store
from p3d.representation.encoders import (
    FisherVectorEncoder,
    FVVAEEncoder,
    LocalEncoder,
    VLADEncoder,
    ids_digest,
    load_encoder,
)
from p3d.representation.local import LocalSet, LocalSpec
from p3d.representation.store import FeatureWriter, list_parts, read_features

META = {"model": "p3d63", "layers": ["pool5"], "input_spec": {"clip_len": 16}, "num_clips": 2, "flip": False}
D = 5


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _video(i: int, poison: bool = False) -> np.ndarray:
    """``(clips=2, positions=3, D)`` descriptors: class ``i % 2`` spreads them along one axis by 2 or 1."""
    if poison:
        return np.full((2, 3, D), 1e4, np.float32)  # a huge constant: any fit that saw it would be wrecked
    rng = np.random.default_rng(i)
    x = 2.0 + 0.3 * rng.standard_normal((2, 3, D))
    x[:, :, 0] += np.array([1.0, -1.0, 0.0]) * (2.0 if i % 2 == 0 else 1.0)
    return x.astype(np.float32)


def _store(path, n: int = 16, test: set[int] = frozenset(), poison: bool = False, flush_every: int = 5) -> list[str]:
    """A store of ``n`` videos with local descriptors; videos ``test`` poisoned when ``poison``; returns the ids."""
    meta = {**META, "local": LocalSpec("res5c").to_meta(), "class_names": ["a", "b"]}
    ids = [f"c{i % 2}/v{i:02d}" for i in range(n)]
    with FeatureWriter(path, meta, flush_every=flush_every) as w:
        for i, vid in enumerate(ids):
            x = _video(i, poison and i in test)
            w.add(vid, {"pool5": x.mean((0, 1))}, label=i % 2, local={"res5c": x})
    return ids


TEST = {1, 4, 6, 11, 12, 15}


def _encoders() -> list[LocalEncoder]:
    tiny_vae = dict(latent=2, hidden=(8,), dropout=0.0, steps=30, batch_size=16, finetune_steps=5, sets_per_batch=4)
    return [
        FisherVectorEncoder(2, pca_dim=3, max_iter=20),
        VLADEncoder(2, pca_dim=3, max_iter=20),
        FVVAEEncoder(**tiny_vae),
    ]


@pytest.mark.parametrize("index", range(3), ids=["fv", "vlad", "fv-vae"])
def test_fitting_never_sees_test_videos(tmp_path, index):
    ids = _store(tmp_path / "clean", test=TEST)
    _store(tmp_path / "poisoned", test=TEST, poison=True)
    train = [v for i, v in enumerate(ids) if i not in TEST]
    fitted = []
    for name in ("clean", "poisoned"):
        enc = _encoders()[index]
        stats = encode_store(tmp_path / name, tmp_path / f"{name}-enc", enc, fit_ids=train)
        assert stats.fitted and stats.written == len(ids)
        fitted.append(load_encoder(tmp_path / f"{name}-enc" / ENCODER_NAME))
    clean, poisoned = fitted
    # the same model, array for array, whatever the test videos hold
    for k, v in clean._arrays().items():
        np.testing.assert_array_equal(poisoned._arrays()[k], v, err_msg=k)
    assert poisoned.fitted_on == clean.fitted_on
    assert clean.fitted_on["ids_sha256"] == ids_digest(train) and clean.fitted_on["videos"] == len(train)
    if isinstance(clean, FisherVectorEncoder):
        assert np.abs(clean.means).max() < 100 and np.abs(clean.pca.mean).max() < 100
    if isinstance(clean, VLADEncoder):
        assert np.abs(clean.codebook).max() < 100
    # the recorded provenance says so too
    meta = json.loads((tmp_path / "poisoned-enc" / "meta.json").read_text())
    assert meta["encoding"]["fitted_on"]["ids_sha256"] == ids_digest(train)


def test_encoded_store_is_the_encoders_output_with_provenance(tmp_path):
    ids = _store(tmp_path / "s")
    train = ids[:10]
    enc = FisherVectorEncoder(2, pca_dim=3, max_iter=20)
    stats = encode_store(
        tmp_path / "s", tmp_path / "fv", enc, fit_ids=train, fit_scope="first ten", batch_descriptors=7
    )
    fs = read_features(tmp_path / "fv")
    assert fs.ids == ids and fs.layers == ["fv"] and fs.layer().shape == (16, enc.dim) == (16, 12)
    np.testing.assert_array_equal(fs.labels, [i % 2 for i in range(16)])
    local = LocalSet(tmp_path / "s")
    for i in range(16):
        np.testing.assert_allclose(fs.video["fv"][i], enc.encode(local[i]), rtol=1e-5, atol=1e-6)
    e = fs.meta["encoding"]
    assert e["encoder"] == "fv" and e["dim"] == 12 and e["config"]["components"] == 2 and e["local"]["layer"] == "res5c"
    from p3d.fileio import sha256_file

    assert e["sha256"] == sha256_file(tmp_path / "fv" / ENCODER_NAME) and fs.meta["fit_scope"] == "first ten"
    assert fs.meta["layers"] == ["fv"] and "local" not in fs.meta and fs.class_names == ["a", "b"]
    assert stats.videos_per_second > 0
    with pytest.raises(ValueError, match="holds no local descriptors"):
        LocalSet(tmp_path / "fv")  # an encoded store is a plain feature store


def test_encode_resumes_with_the_saved_encoder_and_refuses_other_settings(tmp_path, monkeypatch):
    ids = _store(tmp_path / "s")
    train = ids[:10]
    monkeypatch.setattr(encode_mod, "_CHUNK_BYTES", 4 * 12 * 3)  # 3 encoded videos per part
    encode_store(tmp_path / "s", tmp_path / "fv", FisherVectorEncoder(2, pca_dim=3, max_iter=20), fit_ids=train)
    full = read_features(tmp_path / "fv")
    parts = list_parts(tmp_path / "fv")
    assert len(parts) == 6
    parts[-1].unlink()  # a kill lost the last chunk
    parts[-2].unlink()

    def no_fit(*a, **k):
        raise AssertionError("fitted again")

    monkeypatch.setattr(LocalEncoder, "fit", no_fit, raising=False)
    monkeypatch.setattr(FisherVectorEncoder, "fit", no_fit)
    stats = encode_store(tmp_path / "s", tmp_path / "fv", FisherVectorEncoder(2, pca_dim=3, max_iter=20), fit_ids=train)
    assert not stats.fitted and (stats.written, stats.skipped) == (4, 12)
    again = read_features(tmp_path / "fv")
    np.testing.assert_array_equal(again.layer()[again.rows(full.ids)], full.layer())
    with pytest.raises(ValueError, match="other settings"):
        encode_store(tmp_path / "s", tmp_path / "fv", FisherVectorEncoder(3, pca_dim=3), fit_ids=train)
    with pytest.raises(ValueError, match="other training videos"):
        encode_store(tmp_path / "s", tmp_path / "fv", FisherVectorEncoder(2, pca_dim=3, max_iter=20), fit_ids=ids[:9])
    with pytest.raises(ValueError, match="other settings"):
        encode_store(tmp_path / "s", tmp_path / "fv", VLADEncoder(2, pca_dim=3), fit_ids=train)


def test_a_fitted_encoder_encodes_new_stores_and_fitting_needs_training_videos(tmp_path):
    ids = _store(tmp_path / "s")
    vlad = VLADEncoder(2, max_iter=20)
    encode_store(tmp_path / "s", tmp_path / "a", vlad, fit_ids=ids[:8])
    saved = load_encoder(tmp_path / "a" / ENCODER_NAME)
    _store(tmp_path / "new", n=4)  # "new videos": encoded by the same fitted model, nothing fitted
    stats = encode_store(tmp_path / "new", tmp_path / "b", saved)
    assert not stats.fitted and stats.written == 4
    b, local = read_features(tmp_path / "b"), LocalSet(tmp_path / "new")
    np.testing.assert_allclose(b.layer(), saved.encode_many(list(local)), rtol=1e-6)
    assert b.meta["encoding"]["fitted_on"] == vlad.fitted_on
    with pytest.raises(ValueError, match="give its training videos"):
        encode_store(tmp_path / "s", tmp_path / "c", VLADEncoder(2))
    with pytest.raises(ValueError, match="2 video id"):
        encode_store(tmp_path / "s", tmp_path / "d", VLADEncoder(2), fit_ids=["x/1", "x/2", ids[0]])
    with pytest.raises(ValueError, match="needs the class of every training video"):
        no_labels = tmp_path / "nolab"
        with FeatureWriter(no_labels, {**META, "local": LocalSpec().to_meta()}) as w:
            for i in range(4):
                w.add(f"v{i}", {"pool5": np.zeros(D)}, local={"res5c": _video(i)})
        encode_store(no_labels, tmp_path / "e", FVVAEEncoder(latent=2, hidden=(4,), steps=2), fit_ids=["v0", "v1"])


# ------------------------------------------------------------------------------------------------------------------
# the command line


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_classes=2, videos_per_class=5, num_frames=16, size=(48, 48), seed=0)
    return root


def test_cli_extract_local_encode_svm(dataset, tmp_path, capsys):
    lists = dataset / "ucfTrainTestlist"
    split = ["--split", str(lists / "trainlist01.txt"), str(lists / "testlist01.txt")]
    store, out = tmp_path / "st", tmp_path / "enc"
    args = [
        "extract", "ucf101", str(dataset / "UCF-101"), "--annotations", str(lists), "--split", "1", "-o", str(store),
        "--model", "p3d63", "--model-option", "width=4", "--model-option", "layers=[1,1,1,1]", "--num-classes", "2",
        "--clip-len", "8", "--size", "48", "--resize", "56", "56", "--num-clips", "2", "--batch-size", "4",
        "--workers", "0", "--no-progress", "--local", "res5c", "--local-pyramid", "2,1", "--local-pca", "8",
        "--local-pca-videos", "4",
    ]  # fmt: skip
    assert main(args) == 0
    assert "10 video(s) written" in capsys.readouterr().out
    local = LocalSet(store)
    assert local.dim == 8 and local.count(0) == 2 * 5 and local.spec.pyramid == (2, 1)
    train = [v for v, *_ in (ln.split() for ln in (lists / "trainlist01.txt").read_text().splitlines())]
    settings = {
        "fv": ["--components", "2", "--pca", "4"],
        "vlad": ["--components", "2"],
        "fv-vae": ["--latent", "2", "--hidden", "8", "--steps", "20", "--finetune-steps", "4"],
    }
    for kind, extra in settings.items():
        enc = tmp_path / kind
        assert main(["encode", str(store), "-o", str(enc), "--encoder", kind, *split, "--no-progress", *extra]) == 0
        text = capsys.readouterr().out
        assert f"fitting {kind} on {len(train)} of 10 videos" in text and "10 video(s) encoded" in text
        fitted = load_encoder(enc / ENCODER_NAME)
        assert fitted.fitted_on["ids_sha256"] == ids_digest([t.rsplit(".", 1)[0] for t in train])
        assert main(["svm", str(enc), *split, "--classes", str(lists / "classInd.txt")]) == 0
        text = capsys.readouterr().out
        assert f"layer {kind} ({fitted.dim}-d)" in text and "top1" in text
    # resumed: nothing fitted or encoded again; a saved encoder encodes another output the same way
    assert (
        main(["encode", str(store), "-o", str(tmp_path / "vlad"), "--encoder", "vlad", "--components", "2", *split])
        == 0
    )
    assert "0 video(s) encoded, 10 already done" in capsys.readouterr().out
    assert main(["encode", str(store), "-o", str(out), "--encoder-file", str(tmp_path / "vlad" / ENCODER_NAME)]) == 0
    np.testing.assert_array_equal(read_features(out).layer(), read_features(tmp_path / "vlad").layer())


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    ids = _store(tmp_path / "s", n=6)
    plain = tmp_path / "plain"
    with FeatureWriter(plain, META) as w:
        w.add("v0", {"pool5": np.zeros(3)})
    (tmp_path / "train.txt").write_text("c0/v00\nc1/v01\n")
    (tmp_path / "test.txt").write_text("c0/v02\nmissing/v99\n")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    s = str(tmp_path / "s")
    o = str(tmp_path / "o")
    train, test, corrupt = (str(tmp_path / n) for n in ("train.txt", "test.txt", "corrupt.safetensors"))
    enc = ["encode", s, "-o", o]
    cases = {
        "holds no local descriptors": ["encode", str(plain), "-o", o, "--encoder", "fv", "--fit-on-all"],
        "must be fitted on the training videos only": [*enc, "--encoder", "vlad"],
        "1 of 2 video id(s) of the split list": [*enc, "--encoder", "vlad", "--split", train, test],
        "not a readable safetensors file": [*enc, "--encoder-file", corrupt],
        "no such encoder file": [*enc, "--encoder-file", str(tmp_path / "none.safetensors")],
        "--pca and --max-iter apply to --encoder fv and vlad": [*enc, "--encoder", "fv-vae", "--pca", "4"],
        "--latent applies to --encoder fv-vae": [*enc, "--encoder", "fv", "--latent", "4"],
        "give one of --encoder": [*enc, "--fit-on-all"],
        "choose one of --split, --train-ids and": [*enc, "--encoder", "fv", "--fit-on-all", "--train-ids", o],
        "--encoder-file is fitted already: --split do not apply": [*enc, "--encoder-file", s, "--split", s, s],
        "--local-pyramid and --local-pca shape": ["extract", str(tmp_path), "-o", o, "--local-pca", "8"],
    }  # fmt: skip
    for message, argv in cases.items():
        assert main(argv) == 2, message
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (message, err)
    with pytest.raises(SystemExit) as e:  # argparse: unknown encoder
        main(["encode", s, "-o", o, "--encoder", "bow"])
    assert e.value.code == 2 and "invalid choice: 'bow'" in capsys.readouterr().err
    assert not (tmp_path / "o" / ENCODER_NAME).exists()
    # the fit-on-all escape hatch works, and says so loudly
    assert main(["encode", s, "-o", o, "--encoder", "vlad", "--components", "2", "--fit-on-all", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: --fit-on-all" in captured.err and f"fitting vlad on {len(ids)} of {len(ids)}" in captured.out


def test_cli_several_splits_fit_on_videos_in_every_train_list_and_no_test_list(tmp_path, capsys):
    ids = _store(tmp_path / "s", n=8)
    lists = {
        "tr1": ids[0:6],
        "te1": ids[6:8],
        "tr2": ids[2:8],
        "te2": ids[0:2],
    }
    for name, vids in lists.items():
        (tmp_path / f"{name}.txt").write_text("".join(f"{v}\n" for v in vids))
    split = lambda a, b: ["--split", str(tmp_path / f"{a}.txt"), str(tmp_path / f"{b}.txt")]  # noqa: E731
    argv = ["encode", str(tmp_path / "s"), "-o", str(tmp_path / "o"), "--encoder", "vlad", "--components", "2"]
    assert main([*argv, *split("tr1", "te1"), *split("tr2", "te2"), "--no-progress"]) == 0
    assert "fitting vlad on 4 of 8 videos (videos in every train list and no test list of 2 splits)" in (
        capsys.readouterr().out
    )
    assert load_encoder(tmp_path / "o" / ENCODER_NAME).fitted_on["ids_sha256"] == ids_digest(ids[2:6])
