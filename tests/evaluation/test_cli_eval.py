"""`p3d svm`, `pca-study`, `embed`, `similarity`, `merge-features` on small synthetic feature stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from p3d.cli import main
from p3d.evaluation.protocol import build_protocol
from p3d.representation.store import FeatureWriter, read_features

CLASSES = ["Jump", "Run", "Wave"]


def make_store(path, informative: bool = True, with_labels: bool = True, n_per: int = 12, d: int = 24, seed: int = 0):
    """UCF-like ids '<Class>/v_<Class>_g<group>_c<clip>' with Gaussian class clusters (or pure noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 3
    meta = {"model": "synthetic", "layers": ["pool5", "prob"], "class_names": CLASSES if with_labels else None}
    with FeatureWriter(path, meta, flush_every=10) as w:
        for c, name in enumerate(CLASSES):
            for i in range(n_per):
                x = (centres[c] if informative else 0) + rng.normal(size=d)
                p = np.exp(x[:3]) / np.exp(x[:3]).sum()
                vid = f"{name}/v_{name}_g{i // 2 + 1:02d}_c{i % 2 + 1:02d}"
                w.add(vid, {"pool5": np.abs(x), "prob": p}, label=c if with_labels else None)
    return path


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_svm_split_lists_ucf_style(tmp_path, capsys):
    store = make_store(tmp_path / "f", with_labels=False)
    classind = write(tmp_path / "classInd.txt", [f"{i + 1} {n}" for i, n in enumerate(CLASSES)])
    fs = read_features(store)
    train = [f"{v}.avi {CLASSES.index(v.split('/')[0]) + 1}" for v in fs.ids if int(v[-6:-4]) <= 4]
    test = [f"{v}.avi" for v in fs.ids if int(v[-6:-4]) > 4]  # no label column: class from the folder
    tr, te = write(tmp_path / "trainlist01.txt", train), write(tmp_path / "testlist01.txt", test)
    out = tmp_path / "r.json"
    args = ["svm", str(store), "--split", str(tr), str(te), "--classes", str(classind), "--json", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["mean"]["top1"] >= 0.95 and r["layer"] == "pool5" and r["dim"] == 24
    assert "split1" in capsys.readouterr().out


def test_svm_kfold_and_chance(tmp_path):
    good = make_store(tmp_path / "good")
    noise = make_store(tmp_path / "noise", informative=False)
    res = {}
    for name, store in (("good", good), ("noise", noise)):
        out = tmp_path / f"{name}.json"
        assert main(["svm", str(store), "--kfold", "4", "--json", str(out)]) == 0
        res[name] = json.loads(out.read_text())["pooled"]["top1"]
    assert res["good"] >= 0.95 and res["noise"] < 0.6  # 3 classes: chance 1/3


def test_svm_errors(tmp_path, capsys):
    store = make_store(tmp_path / "f")
    tr = write(tmp_path / "train.txt", ["Jump/v_Jump_g01_c01 1", "Jump/v_Nope_g01_c01 1"])
    te = write(tmp_path / "test.txt", ["Run/v_Run_g01_c01 2"])
    assert main(["svm", str(store), "--split", str(tr), str(te)]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 video id(s) of the split list" in err and "train.txt" in err and "v_Nope_g01_c01" in err
    assert main(["svm", str(store), "--kfold", "3", "--loo"]) == 2
    assert "exactly one protocol" in capsys.readouterr().err
    assert main(["svm", str(store), "--kfold", "3", "--layer", "res5c"]) == 2
    assert "no layer 'res5c'" in capsys.readouterr().err


def test_protocol_groups_and_bare_names(tmp_path):
    fs = read_features(make_store(tmp_path / "f"))
    groups = write(tmp_path / "groups.txt", [f"{v.split('/')[1]} {v[-7:-4]}" for v in fs.ids])  # bare file names
    p = build_protocol(fs, groups=groups)
    assert len(p.splits) == 6 and p.pool  # 6 groups g01..g06
    for s in p.splits:
        assert len({fs.ids[i][-7:-4] for i in s.test}) == 1
        assert not set(s.train) & set(s.test)


def test_pca_study_and_embed_write_pngs(tmp_path):
    import matplotlib.image as mpimg

    a, b = make_store(tmp_path / "a"), make_store(tmp_path / "b", informative=False, seed=1)
    png, js = tmp_path / "pca.png", tmp_path / "pca.json"
    args = ["pca-study", f"P3D={a}", f"R2D={b}", "--dims", "20", "5", "2", "--kfold", "3", "-o", str(png)]
    assert main([*args, "--json", str(js)]) == 0
    curves = json.loads(js.read_text())
    assert [c["dim"] for c in curves["P3D"]] == [20, 5, 2]
    assert curves["P3D"][0]["top1"] > curves["R2D"][0]["top1"]
    assert mpimg.imread(png).ndim == 3
    tsne = tmp_path / "tsne.png"
    assert main(["embed", str(a), "-o", str(tsne), "--perplexity", "5"]) == 0
    assert mpimg.imread(tsne).shape[0] > 100


def test_similarity_cli(tmp_path):
    store = make_store(tmp_path / "f")
    fs = read_features(store)
    rng = np.random.default_rng(0)
    lines = []
    for k in range(60):
        i = rng.integers(len(fs))
        same = k % 2 == 0
        pool = [j for j in range(len(fs)) if j != i and (fs.labels[j] == fs.labels[i]) == same]
        lines.append(f"{fs.ids[i]} {fs.ids[rng.choice(pool)]} {int(same)}")
    pairs = write(tmp_path / "pairs.txt", lines)
    out, roc = tmp_path / "s.json", tmp_path / "roc.png"
    args = ["similarity", str(store), "--pairs", str(pairs), "--shuffle-seed", "0", "--json", str(out)]
    assert main([*args, "--roc", str(roc)]) == 0
    r = json.loads(out.read_text())
    assert r["layers"] == ["prob", "pool5"] and len(r["fold_accuracy"]) == 10 and r["accuracy"] > 0.8
    assert roc.stat().st_size > 1000
    bad = write(tmp_path / "bad.txt", ["a b maybe"])
    assert main(["similarity", str(store), "--pairs", str(bad)]) == 2


def test_merge_features_cli(tmp_path, capsys):
    store = make_store(tmp_path / "f")
    assert main(["merge-features", str(store), "-o", str(tmp_path / "m.safetensors")]) == 0
    assert "36 videos" in capsys.readouterr().out
    assert read_features(tmp_path / "m.safetensors").ids == sorted(read_features(store).ids)


@pytest.mark.parametrize("bad", ["1 Jump\n3 Run\n", "1 Jump extra\n"])
def test_class_index_errors(tmp_path, bad):
    from p3d.evaluation.lists import read_class_index

    p = tmp_path / "c.txt"
    p.write_text(bad)
    with pytest.raises(ValueError, match="c.txt"):
        read_class_index(p)


def test_svm_multi_label_store_reports_activitynet_map(tmp_path, capsys):
    """Untrimmed videos with two classes: the SVM trains on the first label, mAP counts every true label."""
    from p3d.evaluation.svm import Split, SVMConfig, fit_predict, mean_average_precision, multi_hot

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    store = tmp_path / "anet"
    with FeatureWriter(store, {"model": "synthetic", "class_names": CLASSES}, flush_every=7) as w:
        for i in range(36):
            c = i % 3
            labs = (c, (c + 1) % 3) if i % 4 == 0 else (c,)  # every 4th video also shows the next class
            x = centres[list(labs)].mean(0) + rng.normal(size=16)
            w.add(f"v{i:02d}", {"pool5": np.abs(x)}, label=labs)
    fs = read_features(store)
    assert sum(len(labs) > 1 for labs in fs.multi_labels) == 9
    train = write(tmp_path / "train.txt", [f"v{i:02d}" for i in range(24)])
    test = write(tmp_path / "test.txt", [f"v{i:02d}" for i in range(24, 36)])
    out = tmp_path / "r.json"
    assert main(["svm", str(store), "--split", str(train), str(test), "--json", str(out)]) == 0
    assert "multi-label: 9 video(s)" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["multi_label_videos"] == 9

    # by hand: the same SVM, positives of each class = every test video holding it among its labels
    split = Split("s", np.arange(24), np.arange(24, 36))
    classes, scores, first = fit_predict(fs.layer(), fs.labels, split, SVMConfig())
    y = multi_hot(fs.multi_labels[24:], classes)
    assert res["mean"]["mAP"] == pytest.approx(mean_average_precision(scores, y))
    assert res["mean"]["mAP"] != pytest.approx(mean_average_precision(scores, first))
    top1 = np.argmax(scores, axis=1)
    assert res["mean"]["top1"] == pytest.approx(np.mean(y[np.arange(12), top1]))
    # pooled k-fold predictions are scored multi-label too
    assert main(["svm", str(store), "--kfold", "3", "--json", str(out)]) == 0
    pooled = json.loads(out.read_text())["pooled"]
    assert 0.5 < pooled["mAP"] <= 1 and 0.5 < pooled["top1"] <= 1
