"""The demo: P3D sees motion, a frame-level 2D ResNet cannot.

:func:`run_demo` writes the motion-only synthetic dataset (:func:`p3d.data.make_synthetic_dataset`: classes
differ only in how an object moves, so every single frame is uninformative), trains a tiny P3D ResNet (mixed
A→B→C units) and the frame-level 2D ResNet built from the same parts with the same iteration budget, tests
both at video level, and writes ``report.md``, ``report.json`` and ``report.png`` to the output folder.
``variants=True`` adds P3D-A, P3D-B and P3D-C (the paper's Table 1 in miniature: accuracy, size, speed).

``features=True`` (the default) then uses both trained networks as video descriptors (paper, Sec. 5, in
miniature): :func:`p3d.representation.extract.extract_features` writes pool5 descriptors of every train and test video
(``feature_clips`` centre clips per video) to ``features/<model>/``, a linear SVM is trained on the train split
and tested on the test split (:mod:`p3d.evaluation`), and ``tsne.png`` shows the t-SNE embeddings of the test
videos' descriptors of both models side by side.  The feature stores are resumable and tied to the checkpoint
they were computed from (sha256 of its weights): a retrained model's store is discarded and extracted again.

``flow=True`` (the default) adds the second stream of the two-stream networks: TV-L1 optical flow of every
video (``p3d flow``'s job, :func:`p3d.data.flowjob.flow_tree`, with the cheap :data:`FLOW_TVL1` parameters: the
motions are 1-2 px per frame) into ``flow/``, a flow P3D trained on it with the same budget (``variants=True``
adds a flow 2D ResNet), and the late fusion of the RGB and flow P3D (mean of their softmax scores,
:mod:`p3d.engine.fusion`).  The report
gives, for each model, how well it tells the rotation sense apart (RotateCW against RotateCCW: the fraction of
those test videos whose true rotation scores above the opposite one) — one frame, or the frame-level 2D network,
cannot tell the two apart; a single flow field already holds the sense of rotation.

``timeline=True`` (``p3d demo --timeline``) then takes both trained networks to long, untrimmed videos
(:func:`p3d.data.make_synthetic_untrimmed`: several actions of the same classes separated by still background, with
an ActivityNet v1.3 JSON): each network scores windows every ``window_stride`` frames along every video
(:mod:`p3d.representation.dense`), segments are read off the scores (:mod:`p3d.evaluation.timeline`) and scored as
ActivityNet scores temporal localisation (mAP at tIoU 0.5:0.05:0.95 and their mean), plus video-level
classification from the mean window scores: the report's "Untrimmed video" table and ``timeline_<model>.png``;
each video's timeline is in ``untrimmed/timelines/<model>/`` (``p3d localize`` reads them back).

The paper's res5c encodings (Sec. 5: FV-VAE of res5c, 90.5 % against pool5's 88.6 % on UCF101) in miniature: the
P3D store also keeps res5c's local descriptors (:mod:`p3d.representation.local`; the demo's tiny P3D has a
256 x 1 x 2 x 2 res5c, pyramid levels (2, 1): the 4 positions and their maximum, 5 descriptors per clip), and
:data:`ENCODINGS` -- Fisher vector, VLAD and FV-VAE, small settings so that they add seconds, not minutes -- are
fitted on the training split only (:func:`p3d.representation.encode.encode_store`) and evaluated by the same linear
SVM on the same split as pool5: the report's "Encoding res5c" table.

The training settings are :data:`p3d.engine.config.DEMO_OVERRIDES`: tiny networks from scratch need trainable
BatchNorm and a higher learning rate than the paper's fine-tuning protocol, and no horizontal flips (they
would swap MoveLeft/MoveRight and the two rotations).  Each model's run folder is a normal ``p3d train`` run:
an interrupted demo resumes from its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from p3d.engine.checkpoint import latest_checkpoint
from p3d.engine.config import DEMO_OVERRIDES, TrainConfig
from p3d.fileio import atomic_write_json, atomic_write_text

__all__ = ["DemoSettings", "ENCODINGS", "FLOW_MODELS", "FLOW_TVL1", "MODELS", "VARIANTS", "run_demo"]

log = logging.getLogger(__name__)

# key -> (label, registry name, options)
MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "p3d": ("P3D (mixed A→B→C)", "p3d63", {"pattern": "ABC"}),
    "2d": ("2D ResNet (frame-level)", "resnet50_2d", {}),
}
# the res5c encodings of the P3D store: encoder -> (label, settings); small on purpose (module docstring).  FV-VAE:
# latent 32 and 400 + 200 steps instead of the paper's 256 and thousands (its default takes 35-60 CPU minutes on
# UCF101-sized data, BENCHMARKS.md); E = 256 x 33 = 8448.
LOCAL_LAYER, LOCAL_PYRAMID = "res5c", (2, 1)
ENCODINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "fv": ("Fisher vector (K=8, PCA 64)", {"components": 8, "pca_dim": 64, "max_iter": 100}),
    "vlad": ("VLAD (K=16, PCA 64)", {"centres": 16, "pca_dim": 64, "max_iter": 100}),
    "fv-vae": (
        "FV-VAE (latent 32, 400 + 200 steps)",
        {"latent": 32, "hidden": (128,), "steps": 400, "batch_size": 256, "finetune_steps": 200},
    ),
}
VARIANTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "p3d_a": ("P3D-A", "p3d63", {"pattern": "A"}),
    "p3d_b": ("P3D-B", "p3d63", {"pattern": "B"}),
    "p3d_c": ("P3D-C", "p3d63", {"pattern": "C"}),
}
FLOW_MODELS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "p3d_flow": ("P3D, optical flow", "p3d63", {"pattern": "ABC", "in_channels": 2}),
    "2d_flow": ("2D ResNet, optical flow (frame-level)", "resnet50_2d", {"in_channels": 2}),
}
FLOW_DEFAULT = ("p3d_flow",)  # the flow 2D ResNet only with variants (it costs as much as the flow P3D)
# TV-L1 for the demo's 64x64 videos, whose motions are 1-2 px per frame: two pyramid levels and one warp are
# enough, at ~10 ms per pair on one CPU core (OpenCV's defaults: 5 levels x 5 warps, ~10x the time)
FLOW_TVL1 = {"nscales": 2, "warps": 1, "inner_iterations": 10, "outer_iterations": 2}


@dataclass
class DemoSettings:
    num_classes: int = 6
    videos_per_class: int = 150
    test_fraction: float = 0.2
    video_size: tuple[int, int] = (64, 64)
    num_frames: int = 32
    iterations: int = 800
    lr_step: int = 600
    test_clips: int = 5
    feature_clips: int = 2  # clips per video for the representation study (the 32-frame videos hold ~1 clip)
    seed: int = 0
    num_workers: int | None = None
    untrimmed_videos: int = 16  # --timeline: long videos to localise the actions in
    window_stride: int = 4  # --timeline: frames between window starts


def _dataset(root: Path, s: DemoSettings) -> Path:
    from p3d.data import make_synthetic_dataset

    params = {
        "num_classes": s.num_classes,
        "videos_per_class": s.videos_per_class,
        "num_frames": s.num_frames,
        "size": list(s.video_size),
        "test_fraction": s.test_fraction,
        "seed": s.seed,
    }
    marker = root / "dataset.json"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        say(f"synthetic dataset already in {root}")
        return root
    say(f"writing the synthetic dataset to {root} ...")
    t0 = time.perf_counter()
    make_synthetic_dataset(
        root,
        s.num_classes,
        s.videos_per_class,
        num_frames=s.num_frames,
        size=s.video_size,
        test_fraction=s.test_fraction,
        seed=s.seed,
    )
    atomic_write_json(marker, params, indent=None)
    say(f"synthetic dataset written in {time.perf_counter() - t0:.0f} s")
    return root


def _flow_dataset(data_root: Path, root: Path, s: DemoSettings) -> Path:
    """The TV-L1 flow of every demo video under ``root`` (resumable; recomputed when the data or parameters
    change)."""
    import shutil

    from p3d.data.flowjob import flow_tree
    from p3d.flow import TVL1Params

    params = {"dataset": json.loads((data_root / "dataset.json").read_text()), "tvl1": FLOW_TVL1, "bound": 20.0}
    marker = root / "flow.json"
    if root.exists() and not (marker.is_file() and json.loads(marker.read_text()) == params):
        shutil.rmtree(root)
    if marker.is_file():
        say(f"optical flow already in {root}")
        return root
    say(f"computing TV-L1 optical flow of the videos into {root} ...")
    t0 = time.perf_counter()
    workers = max(1, min(2, s.num_workers if s.num_workers is not None else 2))
    report = flow_tree(data_root, root, params=TVL1Params(**FLOW_TVL1), workers=workers, threads=1)
    if report.failed:
        raise RuntimeError(f"optical flow failed for {len(report.failed)} video(s), e.g. {report.failed[0]}")
    atomic_write_json(marker, params, indent=None)
    say(f"optical flow: {report.written} videos, {report.fields} fields in {time.perf_counter() - t0:.0f} s")
    return root


def _rotation_sense(ev: Any) -> float | None:
    """Among the test videos of RotateCW and RotateCCW, the fraction whose true rotation scores above the opposite
    one (None when the classes are not both in the demo)."""
    try:
        cw, ccw = ev.classes.index("RotateCW"), ev.classes.index("RotateCCW")
    except ValueError:
        return None
    hits = [
        float(ev.scores[i, lab[0]] > ev.scores[i, ccw if lab[0] == cw else cw])
        for i, lab in enumerate(ev.labels)
        if lab and lab[0] in (cw, ccw)
    ]
    return sum(hits) / len(hits) if hits else None


def demo_config(data_root: Path, run_dir: Path, model: str, options: dict[str, Any], s: DemoSettings) -> TrainConfig:
    cfg = TrainConfig().update(DEMO_OVERRIDES, "DEMO_OVERRIDES")
    cfg.update({"model": {"name": model, **options}}, "demo")
    cfg.data.kind, cfg.data.root, cfg.data.num_workers = "ucf101", str(data_root), s.num_workers
    cfg.optim.iterations, cfg.optim.lr_step = s.iterations, s.lr_step
    cfg.run.out_dir, cfg.run.seed = str(run_dir), s.seed
    cfg.run.val_every, cfg.run.ckpt_every, cfg.run.log_every = 0, 100, 10
    cfg.validate()
    return cfg


def _train_and_test(
    key: str,
    label: str,
    model: str,
    options: dict[str, Any],
    data_root: Path,
    out: Path,
    s: DemoSettings,
    features: bool = False,
) -> dict[str, Any] | None:
    """Train (or resume) and test one model; ``None`` when training was stopped by a signal."""
    from p3d.data import build_samples
    from p3d.engine.evaluate import evaluate_videos
    from p3d.engine.trainer import Trainer

    run_dir = out / "runs" / key
    cfg = demo_config(data_root, run_dir, model, options, s)
    resume = latest_checkpoint(run_dir / "checkpoints") is not None
    say(f"{label}: training {model} {options or ''} for {s.iterations} iterations" + (" (resuming)" if resume else ""))
    trainer = Trainer(cfg, resume=resume)
    res = trainer.fit()
    if res.status != "completed":
        return None
    net = trainer.model.eval()
    test = build_samples("ucf101", data_root, subset="test")
    ev = evaluate_videos(net, test, num_clips=s.test_clips, clip_batch=16, num_workers=s.num_workers)
    m = ev.metrics()
    rot = _rotation_sense(ev)
    say(f"{label}: video accuracy {m['video_hit@1']:.1%} on {m['num_videos']} test videos ({res.seconds:.0f} s)")
    params = sum(p.numel() for p in net.parameters())
    losses = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    losses = [(r["iteration"], r["loss"]) for r in losses if "loss" in r]
    row_features = _extract(key, model, net, run_dir, data_root, out, s, local=key == "p3d") if features else None
    return {
        "key": key,
        "label": label,
        "model": model,
        "options": options,
        "video_hit@1": m["video_hit@1"],
        "clip_hit@1": m["clip_hit@1"],
        "params": params,
        "train_clips_per_s": res.clips_per_s if res.iteration > 0 and math.isfinite(res.clips_per_s) else None,
        "test_clips_per_s": m["clips_per_s"],
        "train_seconds": res.seconds,
        "per_class": m["per_class"],
        "confusion": m["confusion"],
        "loss_curve": losses,
        "features": row_features,
        "rotation_sense": rot,
        "_eval": ev,  # for the fusion; not written to report.json
    }


def _fusion_row(rgb: dict[str, Any], flow: dict[str, Any]) -> dict[str, Any]:
    """The late fusion of the RGB and flow P3D: the mean of their video softmax scores."""
    from p3d.engine.fusion import fuse_results

    ev = fuse_results({"rgb": rgb["_eval"], "flow": flow["_eval"]})
    m = ev.metrics()
    say(f"two-stream fusion (RGB + flow P3D, 1:1): video accuracy {m['video_hit@1']:.1%}")
    return {
        "key": "fusion",
        "label": "P3D two-stream (RGB + flow, 1:1)",
        "model": "fusion",
        "options": {"streams": [rgb["key"], flow["key"]], "weights": [1.0, 1.0]},
        "video_hit@1": m["video_hit@1"],
        "clip_hit@1": None,
        "params": rgb["params"] + flow["params"],
        "train_clips_per_s": None,
        "test_clips_per_s": None,
        "train_seconds": rgb["train_seconds"] + flow["train_seconds"],
        "per_class": m["per_class"],
        "confusion": m["confusion"],
        "loss_curve": [],
        "features": None,
        "rotation_sense": _rotation_sense(ev),
    }


def _extract(
    key: str,
    model: str,
    net: torch.nn.Module,
    run_dir: Path,
    data_root: Path,
    out: Path,
    s: DemoSettings,
    local: bool = False,
) -> dict[str, Any]:
    """pool5 descriptors of all train and test videos into ``features/<key>`` (resumable, see the module doc); with
    ``local``, res5c's local descriptors too."""
    import shutil

    from p3d.data import SampleList, build_samples
    from p3d.representation.extract import build_meta, extract_features
    from p3d.representation.local import LocalSpec
    from p3d.representation.store import check_meta_compatible, read_meta

    train = build_samples("ucf101", data_root, subset="train")
    test = build_samples("ucf101", data_root, subset="test")
    samples = SampleList(train.samples + test.samples, list(train.classes))
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None:
        raise RuntimeError(f"{run_dir}: no checkpoint to extract features from")
    spec = LocalSpec(LOCAL_LAYER, LOCAL_PYRAMID) if local else None
    meta = build_meta(
        net,
        ["pool5"],
        num_clips=s.feature_clips,
        flip=False,
        map_pooling="max",
        class_names=samples.classes,
        dataset=f"p3d demo synthetic ({data_root})",
        local=spec,
    )
    # the trained weights themselves, not the checkpoint file: a finished run rewrites its last checkpoint
    meta["weights"] = {"checkpoint": ckpt[0].name, "state_sha256": _state_digest(net)}
    store = out / "features" / key
    old = read_meta(store)
    if old is not None:
        try:
            check_meta_compatible(old, meta, str(store))
        except ValueError as e:
            log.warning("re-extracting: %s", e)
            shutil.rmtree(store)
    workers = s.num_workers  # None: p3d.data.default_num_workers
    stats = extract_features(
        net,
        samples,
        store,
        meta,
        layers=["pool5"],
        num_clips=s.feature_clips,
        batch_size=32,
        num_workers=workers,
        flush_every=128,
        progress=False,
        local=spec,
    )
    if stats.bad:
        raise RuntimeError(f"{store}: {len(stats.bad)} video(s) could not be read, e.g. {next(iter(stats.bad))}")
    say(
        f"features: {stats.written} video(s) extracted, {stats.skipped} already done "
        f"({stats.clips} clips in {stats.seconds:.1f} s) -> {store}"
    )
    return {"store": str(store.relative_to(out)), "extract_seconds": stats.seconds, "written": stats.written}


def _state_digest(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, v in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _encodings(out: Path, row: dict[str, Any], split: tuple[Path, Path], s: DemoSettings) -> list[dict[str, Any]]:
    """res5c of ``row``'s store encoded by each of :data:`ENCODINGS` (fitted on the training split only), each
    evaluated by the linear SVM of the pool5 row; an encoded store made from other weights is encoded again."""
    import shutil

    from p3d.evaluation.protocol import build_protocol
    from p3d.evaluation.svm import SVMConfig, run_protocol
    from p3d.representation.encode import encode_store
    from p3d.representation.encoders import ENCODERS
    from p3d.representation.store import read_features, read_meta

    source = out / row["features"]["store"]
    fs = read_features(source, layers=["pool5"])
    train_ids = [fs.ids[i] for i in build_protocol(fs, splits=[split], classes=split[0].parent / "classInd.txt")
                 .splits[0].train]  # fmt: skip
    results = []
    for kind, (label, options) in ENCODINGS.items():
        store = out / "features" / f"{row['key']}-{kind}"
        old = read_meta(store)
        if old is not None and old.get("weights") != fs.meta.get("weights"):
            shutil.rmtree(store)  # encodings of a model trained since: fit and encode again
        encoder = ENCODERS[kind](seed=s.seed, **options)
        t0 = time.perf_counter()
        stats = encode_store(source, store, encoder, fit_ids=train_ids, fit_scope="trainlist01", seed=s.seed)
        enc = read_features(store)
        proto = build_protocol(enc, splits=[split], classes=split[0].parent / "classInd.txt")
        res = run_protocol(enc.layer(kind), proto.labels, proto.splits, SVMConfig(seed=s.seed), topk=(1,))
        seconds = time.perf_counter() - t0
        say(f"{row['label']} res5c {label}: SVM top-1 {res.summary()['top1']:.1%} ({enc.layer(kind).shape[1]}-d, "
            f"fit {stats.fit_seconds:.1f} s, encode {stats.encode_seconds:.1f} s, all {seconds:.1f} s)")  # fmt: skip
        results.append(
            {
                "key": f"{row['key']}-{kind}",
                "encoder": kind,
                "label": label,
                "store": str(store.relative_to(out)),
                "dim": int(stats.encoder.dim),
                "svm_top1": res.summary()["top1"],
                "fit_seconds": stats.fit_seconds,
                "encode_seconds": stats.encode_seconds,
                "seconds": seconds,
                "fitted_on": stats.encoder.fitted_on,
            }
        )
    return results


def _representation(out: Path, rows: list[dict[str, Any]], data_root: Path, s: DemoSettings) -> dict[str, Any]:
    """Linear SVM (train split -> test split) on each model's pool5 store and the side-by-side t-SNE figure."""
    import numpy as np

    from p3d.evaluation.plots import plot_embeddings, tsne_embedding
    from p3d.evaluation.protocol import build_protocol
    from p3d.evaluation.svm import SVMConfig, run_protocol
    from p3d.representation.store import read_features

    lists = data_root / "ucfTrainTestlist"
    split = (lists / "trainlist01.txt", lists / "testlist01.txt")
    cfg = SVMConfig(seed=s.seed)
    results, panels, names = [], {}, None
    for r in rows:
        fs = read_features(out / r["features"]["store"], layers=["pool5"])
        proto = build_protocol(fs, splits=[split], classes=lists / "classInd.txt")
        X = fs.layer("pool5")
        res = run_protocol(X, proto.labels, proto.splits, cfg, topk=(1,))
        test_rows = proto.splits[0].test
        shown = test_rows if len(test_rows) >= 4 else np.arange(len(X))  # t-SNE needs 4 points; toy runs have fewer
        panels[f"{r['label']}: pool5, SVM top-1 {res.summary()['top1']:.1%}"] = (
            tsne_embedding(X[shown], seed=s.seed),
            proto.labels[shown],
        )
        names = proto.class_names
        results.append(
            {
                "key": r["key"],
                "label": r["label"],
                "store": r["features"]["store"],
                "dim": int(X.shape[1]),
                "train_videos": len(proto.splits[0].train),
                "test_videos": len(test_rows),
                "svm_top1": res.summary()["top1"],
                "extract_seconds": r["features"]["extract_seconds"],
            }
        )
    which = "test" if len(shown) == len(test_rows) else "all"
    plot_embeddings(panels, out / "tsne.png", names, title=f"t-SNE of pool5 descriptors, {which} videos")
    local = [r for r in rows if r["key"] == "p3d"]
    encodings = _encodings(out, local[0], split, s) if local else []
    return {
        "layer": "pool5",
        "clips_per_video": s.feature_clips,
        "protocol": "linear SVM (L2-normalised, C=1) trained on trainlist01, tested on testlist01",
        "svm": {"C": cfg.C, "normalize": cfg.normalize},
        "tsne": "tsne.png",
        "tsne_videos": which,
        "results": results,
        "local": {"layer": LOCAL_LAYER, "pyramid": list(LOCAL_PYRAMID), "model": "p3d"} if local else None,
        "encodings": encodings,
    }


def _untrimmed_dataset(root: Path, s: DemoSettings) -> Path:
    """The long videos of ``--timeline`` (written once per settings); returns their ActivityNet JSON."""
    from p3d.data import make_synthetic_untrimmed
    from p3d.data.synthetic import UNTRIMMED_JSON

    params = {"videos": s.untrimmed_videos, "classes": s.num_classes, "size": list(s.video_size), "seed": s.seed}
    marker = root / "dataset.json"
    if marker.is_file() and json.loads(marker.read_text()) == params and (root / UNTRIMMED_JSON).is_file():
        return root / UNTRIMMED_JSON
    say(f"writing {s.untrimmed_videos} untrimmed videos to {root} ...")
    path = make_synthetic_untrimmed(
        root,
        s.untrimmed_videos,
        num_classes=s.num_classes,
        size=s.video_size,
        validation_fraction=1.0,  # all of them are test videos: training saw only the trimmed clips
        seed=s.seed + 1,
    )
    atomic_write_json(marker, params, indent=None)
    return path


def _localize(out: Path, rows: list[dict[str, Any]], s: DemoSettings) -> dict[str, Any]:
    """Both trained networks on the long videos: window scores, segments, ActivityNet mAP@tIoU (module docstring)."""
    from p3d.data import parse_activitynet
    from p3d.evaluation.localization import read_ground_truth
    from p3d.evaluation.timeline import DetectionParams, evaluate_localization, plot_timeline_png, write_timeline
    from p3d.models.resolve import load_model
    from p3d.representation.dense import iter_dense_features

    root = out / "untrimmed"
    gt_path = _untrimmed_dataset(root, s)
    gt = read_ground_truth(gt_path, "validation")
    samples = parse_activitynet(gt_path, root, subset="validation")
    params = DetectionParams()
    results = []
    for r in rows:
        net = load_model(out / "runs" / r["key"]).eval()
        t0 = time.perf_counter()
        scores = {}
        for v in iter_dense_features(
            net, samples, layers=["prob"], stride=s.window_stride, batch_size=32, num_workers=s.num_workers
        ):
            if v.outputs is None:
                raise RuntimeError(f"{samples[v.index].path}: {v.error}")
            scores[samples[v.index].video_id] = (v.outputs["prob"], v.times)
        seconds = time.perf_counter() - t0
        names = list(net.pretrained_cfg.class_names)
        res = evaluate_localization(scores, names, gt, params)
        for tl in res.timelines.values():  # p3d localize reads them back (e.g. to try other detection settings)
            write_timeline(tl, root / "timelines" / r["key"], plot=False)
        first = sorted(res.timelines)[0]
        png = f"timeline_{r['key']}.png"
        plot_timeline_png(res.timelines[first], out / png, gt.segments[first])
        windows = sum(len(v[0]) for v in scores.values())
        say(
            f"{r['label']}: localisation average mAP {res.detection.average_mAP:.3f} (mAP@0.5 "
            f"{res.detection.mAP[0]:.3f}) on {len(res.timelines)} long videos, {windows} windows in {seconds:.0f} s"
        )
        results.append(
            {
                "key": r["key"],
                "label": r["label"],
                "mAP": [float(m) for m in res.detection.mAP],
                "average_mAP": res.detection.average_mAP,
                "hit@1": res.classification.hits[1],
                "hit@3": res.classification.hits[3],
                "classification_mAP": res.classification.mAP,
                "windows": windows,
                "seconds": seconds,
                "timeline": png,
            }
        )
    instances = sum(len(a) for a in gt.segments.values())
    return {
        "videos": len(gt.segments),
        "instances": instances,
        "seconds_of_video": float(sum(gt.durations.values())),
        "window_stride": s.window_stride,
        "tiou_thresholds": [round(float(t), 2) for t in res.detection.tiou_thresholds],
        "params": asdict(params),
        "results": results,
    }


def _report(
    out: Path,
    rows: list[dict[str, Any]],
    s: DemoSettings,
    classes: list[str],
    seconds: float,
    representation: dict[str, Any] | None = None,
    localization: dict[str, Any] | None = None,
) -> str:
    chance = 1.0 / s.num_classes
    lines = [
        "# p3d demo: motion-only synthetic actions",
        "",
        f"{s.num_classes} classes ({', '.join(classes)}), {s.videos_per_class} videos per class "
        f"({int(round(s.test_fraction * s.videos_per_class))} per class held out), {s.num_frames} frames of "
        f"{s.video_size[0]}×{s.video_size[1]}; every model trained "
        f"{s.iterations} iterations from scratch with the same "
        f"settings (seed {s.seed}); tested at video level on {s.test_clips} clips per video. Chance: {chance:.1%}.",
        "",
        "| model | video hit@1 | clip hit@1 | rotation sense | parameters | train clips/s | test clips/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.1%}"

    for r in rows:
        tr = f"{r['train_clips_per_s']:.1f}" if r["train_clips_per_s"] else "–"
        te = f"{r['test_clips_per_s']:.1f}" if r["test_clips_per_s"] else "–"
        lines.append(
            f"| {r['label']} | {r['video_hit@1']:.1%} | {pct(r['clip_hit@1'])} | {pct(r['rotation_sense'])} | "
            f"{r['params']:,} | {tr} | {te} |"
        )
    if any(r["key"] == "fusion" for r in rows):
        lines += [
            "",
            "Rotation sense: among the RotateCW / RotateCCW test videos, the fraction whose true rotation scores "
            "above the opposite one (chance 50%).  Flow models read TV-L1 optical flow "
            f"({', '.join(f'{k}={v}' for k, v in FLOW_TVL1.items())}, bound 20 px) computed by `p3d flow`'s job; "
            "the fusion averages the RGB and flow P3D softmax scores.",
        ]
    lines += ["", "Per-class video accuracy:", "", "| class | " + " | ".join(r["label"] for r in rows) + " |"]
    lines.append("|---|" + "---:|" * len(rows))
    for c in classes:
        cells = [r["per_class"].get(c) for r in rows]
        lines.append(f"| {c} | " + " | ".join("–" if v is None else f"{v:.0%}" for v in cells) + " |")
    if representation is not None:
        rep = representation["results"]
        lines += [
            "",
            "## Representation",
            "",
            f"Each trained network as a video descriptor (paper, Sec. 5): pool5 averaged over "
            f"{representation['clips_per_video']} centre clips per video, {representation['protocol']} "
            f"({rep[0]['train_videos']} / {rep[0]['test_videos']} videos).",
            "",
            "| features | dimension | SVM top-1 | extraction s |",
            "|---|---:|---:|---:|",
        ]
        for r in rep:
            lines.append(f"| {r['label']} pool5 | {r['dim']} | {r['svm_top1']:.1%} | {r['extract_seconds']:.1f} |")
        if representation.get("encodings"):
            lines += _encoding_lines(representation)
        which, png = representation["tsne_videos"], representation["tsne"]
        lines += ["", f"![t-SNE of the {which} videos' pool5 descriptors]({png})"]
    if localization is not None:
        loc = localization
        p = loc["params"]
        lines += [
            "",
            "## Untrimmed video",
            "",
            f"Both networks, trained on the trimmed clips only, score windows every {loc['window_stride']} frames "
            f"along {loc['videos']} long videos ({loc['seconds_of_video']:.0f} s, {loc['instances']} actions "
            f"separated by still background). Segments: softmax scores smoothed over {p['smoothing']} windows, "
            f"threshold {p['threshold']:g}, NMS at tIoU {p['nms_iou']:g}; ActivityNet detection mAP (tIoU "
            "0.5:0.05:0.95) and "
            "video classification from the mean window scores.",
            "",
            "| model | mAP@0.5 | mAP@0.75 | mAP@0.95 | average mAP | video hit@1 | hit@3 | windows/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in loc["results"]:
            m = r["mAP"]
            lines.append(
                f"| {r['label']} | {m[0]:.3f} | {m[5]:.3f} | {m[9]:.3f} | {r['average_mAP']:.3f} | {r['hit@1']:.1%} | "
                f"{r['hit@3']:.1%} | {r['windows'] / max(r['seconds'], 1e-9):.1f} |"
            )
        lines += [""] + [f"![timeline, {r['label']}]({r['timeline']})" for r in loc["results"]]
    lines += ["", f"Total demo time: {seconds:.0f} s on {torch.get_num_threads()} torch threads."]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", text)
    payload = {
        "settings": {**s.__dict__, "video_size": list(s.video_size)},
        "classes": classes,
        "chance": chance,
        "seconds": seconds,
        "results": rows,
        "representation": representation,
        "localization": localization,
    }
    atomic_write_json(out / "report.json", payload)
    _plot(out / "report.png", rows, chance)
    return text


def _encoding_lines(representation: dict[str, Any]) -> list[str]:
    """The report's "Encoding res5c" table: pool5 of P3D, then each encoding of its res5c local descriptors."""
    pool5 = next(r for r in representation["results"] if r["key"] == "p3d")
    local = representation["local"]
    lines = [
        "",
        "### Encoding res5c (paper, Sec. 5)",
        "",
        f"{pool5['label']}: res5c's local descriptors (pyramid levels {local['pyramid']}, "
        f"{representation['clips_per_video']} clips per video) encoded by each encoder fitted on the training split "
        "only, then the same linear SVM and split as pool5 (the paper: FV-VAE of res5c 90.5 % vs pool5 88.6 % on "
        "UCF101).",
        "",
        "| representation | dimension | SVM top-1 | fit + encode + SVM s |",
        "|---|---:|---:|---:|",
        f"| pool5 (mean of res5c) | {pool5['dim']} | {pool5['svm_top1']:.1%} | – |",
    ]
    for e in representation["encodings"]:
        lines.append(f"| res5c {e['label']} | {e['dim']} | {e['svm_top1']:.1%} | {e['seconds']:.1f} |")
    return lines


def _plot(path: Path, rows: list[dict[str, Any]], chance: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [r["label"] for r in rows]
    acc = [100 * r["video_hit@1"] for r in rows]
    colors = ["tab:orange" if r["key"].startswith("2d") else "tab:gray" if r["key"] == "fusion" else "tab:blue"
              for r in rows]  # fmt: skip
    bars = a1.bar(range(len(rows)), acc, color=colors)
    for b, v in zip(bars, acc, strict=True):
        a1.text(b.get_x() + b.get_width() / 2, v + 1, f"{v:.0f}%", ha="center", fontsize=9)
    a1.axhline(100 * chance, color="gray", ls="--", lw=1, label="chance")
    a1.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
    a1.set_ylim(0, 105)
    a1.set_ylabel("video accuracy (%)")
    a1.set_title("test accuracy")
    a1.legend()
    palette = {"p3d": "tab:blue", "2d": "tab:orange", "p3d_a": "tab:green", "p3d_b": "tab:red", "p3d_c": "tab:purple",
               "p3d_flow": "tab:cyan", "2d_flow": "tab:brown"}  # fmt: skip
    for r in rows:
        if r["loss_curve"]:
            it, loss = zip(*r["loss_curve"], strict=True)
            a2.plot(it, loss, label=r["label"], color=palette.get(r["key"]), lw=1.2)
    a2.set_xlabel("iteration")
    a2.set_ylabel("training loss")
    a2.set_title("training loss")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def say(text: str) -> None:
    """One progress line of the demo, timestamped from its start."""
    print(f"[{time.perf_counter() - _T0:6.0f} s] {text}", flush=True)


_T0 = time.perf_counter()


def run_demo(
    out: str | Path,
    settings: DemoSettings | None = None,
    variants: bool = False,
    features: bool = True,
    timeline: bool = False,
    flow: bool = True,
) -> dict[str, Any]:
    """Generate the data, train and test P3D and the 2D baseline (and the P3D variants); with ``flow``, the flow
    stream (flow P3D, two-stream fusion; flow 2D with ``variants``); with ``features``, the representation study
    of P3D and the 2D baseline; with ``timeline``, their action localisation in long videos; write the report.  Returns
    ``report.json``'s content, or ``{"status": "stopped"}`` when a signal stopped training (run again to resume)."""
    global _T0
    _T0 = time.perf_counter()
    s = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = s.num_classes * s.videos_per_class
    say(f"p3d demo -> {out}: {n} synthetic videos of {s.num_classes} motion classes, then P3D vs a 2D ResNet")
    data_root = _dataset(out / "data", s)
    from p3d.data import SYNTHETIC_CLASSES

    models = dict(MODELS)
    if variants:
        models.update(VARIANTS)
    rows = []
    for k, v in models.items():
        row = _train_and_test(k, *v, data_root, out, s, features=features and k in MODELS)
        if row is None:
            say("stopped; run the same command again to resume")
            return {"status": "stopped"}
        rows.append(row)
    if flow:
        flow_root = _flow_dataset(data_root, out / "flow", s)
        for k, v in FLOW_MODELS.items():
            if k not in FLOW_DEFAULT and not variants:
                continue
            row = _train_and_test(k, *v, flow_root, out, s)
            if row is None:
                say("stopped; run the same command again to resume")
                return {"status": "stopped"}
            rows.append(row)
        rows.append(_fusion_row(rows[0], next(r for r in rows if r["key"] == "p3d_flow")))
    for r in rows:
        r.pop("_eval", None)
    if features:
        say("representation: linear SVM and t-SNE on pool5 features of both trained networks")
    rep = _representation(out, [r for r in rows if r["features"]], data_root, s) if features else None
    loc = None
    if timeline:
        say("untrimmed video: both trained networks localise actions in long videos")
        loc = _localize(out, [r for r in rows if r["key"] in MODELS], s)
    seconds = time.perf_counter() - _T0
    text = _report(out, rows, s, list(SYNTHETIC_CLASSES[: s.num_classes]), seconds, rep, loc)
    print("\n" + text)
    return {"status": "completed", **json.loads((out / "report.json").read_text())}
