"""``p3d demo``: P3D against the frame-level 2D ResNet on motion-only synthetic actions (about 10 minutes on 2 cores).

Writes the dataset, both runs, ``report.md``, ``report.json`` and ``report.png`` to ``--out`` and prints both
accuracies.  Unless ``--no-flow``, the optical-flow stream too: TV-L1 flow of every video, a flow P3D and the
two-stream late fusion, with each model's rotation-sense accuracy.  ``--variants`` adds P3D-A, -B and -C (the
paper's Table 1 in miniature) and a flow 2D ResNet.  Then, unless ``--no-features``, both trained RGB networks serve as
video descriptors: pool5 features of the train and test videos, a linear SVM on each, and ``tsne.png``.
``--timeline`` then localises the actions in long, untrimmed videos with both networks (ActivityNet mAP@tIoU,
``timeline_*.png``).  Interrupted demos resume from their checkpoints (and feature stores) when run again with the
same ``--out``.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from p3d.apps.demo import DemoSettings

    d = DemoSettings()
    p.add_argument("--out", default="p3d-demo", help="output folder (default p3d-demo)")
    p.add_argument("--variants", action="store_true", help="also train P3D-A, P3D-B and P3D-C (Table 1 in miniature)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"data and training seed (default {d.seed})")
    p.add_argument(
        "--iterations", type=int, default=d.iterations, help=f"training iterations per model ({d.iterations})"
    )
    p.add_argument(
        "--lr-step", type=int, default=None, help="divide the lr by 10 after N iterations (default 3/4 of them)"
    )
    p.add_argument("--classes", type=int, default=d.num_classes, help=f"motion classes, 2..8 (default {d.num_classes})")
    p.add_argument(
        "--videos-per-class",
        type=int,
        default=d.videos_per_class,
        help=f"synthetic videos per class (default {d.videos_per_class})",
    )
    p.add_argument("--test-clips", type=int, default=d.test_clips, help=f"clips per test video ({d.test_clips})")
    p.add_argument(
        "--no-features",
        action="store_true",
        help="skip the representation study (pool5 features, linear SVM, t-SNE of P3D and the 2D baseline)",
    )
    p.add_argument(
        "--timeline",
        action="store_true",
        help=f"then localise the actions in {d.untrimmed_videos} long, untrimmed videos (ActivityNet mAP@tIoU)",
    )
    p.add_argument(
        "--no-flow",
        action="store_true",
        help="skip the optical-flow stream (TV-L1 flow of the videos, flow P3D, two-stream fusion)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data loading processes (default: the spare cores; 0 = in-process)",
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from p3d.apps.demo import DemoSettings, run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 2 <= args.classes <= 8:
        raise ValueError(f"--classes must be in 2..8, got {args.classes}")
    from p3d.commands._args import check_non_negative, check_positive
    from p3d.fileio import check_writable

    check_positive(iterations=args.iterations, lr_step=args.lr_step)
    check_positive(videos_per_class=args.videos_per_class, test_clips=args.test_clips)
    check_non_negative(seed=args.seed, workers=args.workers)
    check_writable(args.out)
    s = DemoSettings(
        num_classes=args.classes,
        videos_per_class=args.videos_per_class,
        iterations=args.iterations,
        lr_step=args.lr_step or max(1, (3 * args.iterations) // 4),
        test_clips=args.test_clips,
        seed=args.seed,
        num_workers=args.workers,
    )
    report = run_demo(
        args.out,
        s,
        variants=args.variants,
        features=not args.no_features,
        timeline=args.timeline,
        flow=not args.no_flow,
    )
    if report["status"] == "stopped":
        return 128 + 15
    acc = {r["key"]: r["video_hit@1"] for r in report["results"]}
    print(f"P3D video accuracy:    {acc['p3d']:.1%}")
    print(f"2D ResNet video accuracy: {acc['2d']:.1%}   (chance {report['chance']:.1%})")
    if "fusion" in acc:
        rot = {r["key"]: r["rotation_sense"] for r in report["results"]}
        sense = "" if rot["p3d_flow"] is None else f"; rotation sense {rot['p3d_flow']:.1%}"
        print(f"flow P3D video accuracy: {acc['p3d_flow']:.1%}{sense}")
        if "2d_flow" in acc:
            print(f"flow 2D ResNet video accuracy: {acc['2d_flow']:.1%}")
        print(f"two-stream P3D (RGB + flow) video accuracy: {acc['fusion']:.1%}")
    if report["representation"] is not None:
        svm = {r["key"]: r["svm_top1"] for r in report["representation"]["results"]}
        print(f"linear SVM on P3D pool5 features: {svm['p3d']:.1%}")
        print(f"linear SVM on 2D pool5 features:  {svm['2d']:.1%}   (t-SNE: {args.out}/tsne.png)")
    if report.get("localization") is not None:
        for r in report["localization"]["results"]:
            print(f"{r['label']}: localisation average mAP {r['average_mAP']:.3f} (mAP@0.5 {r['mAP'][0]:.3f})")
    print(f"report: {args.out}/report.md, {args.out}/report.png  ({report['seconds']:.0f} s)")
    return 0
