"""``p3d train``: train a model with the paper's protocol (Sec. 4.1); resumable, distributed under torchrun.

Configuration: defaults (the paper's), then ``--config FILE.yaml``, then the explicit flags below, then
``--set section.key=value`` (any field of :mod:`p3d.engine.config`).  The resolved configuration is saved as
``<out>/config.yaml``.  With ``--resume`` the run's saved settings stand, except those given again: the learning
rate and its schedule, the iteration budget, validation, checkpointing and logging apply (and are logged); the
architecture, data, batch size × accumulation and seed are refused with the reason.

Exit status: 0 finished, 3 diverged, 128+signal when stopped by SIGTERM/SIGINT/SIGHUP or by the death of the
launcher (the checkpoint is written; run again with ``--resume``), 2 bad arguments, 74 a failed write (full disk,
read-only folder: the message names the file and the last good checkpoint), 75 the run folder is being written by
another process (named).
"""

from __future__ import annotations

import argparse
import logging
import sys

from p3d.commands._args import add_data_arguments

# flag -> config key
_FLAGS = {
    "model": "model.name",
    "pretrained": "model.pretrained",
    "imagenet_2d": "model.imagenet_2d",
    "pattern": "model.pattern",
    "width": "model.width",
    "layers": "model.layers",
    "dropout": "model.dropout",
    "data_kind": "data.kind",
    "data_root": "data.root",
    "annotations": "data.annotations",
    "split": "data.split",
    "subset": "data.train_subset",
    "classes": "data.classes",
    "val_root": "data.val_root",
    "clip_len": "data.clip_len",
    "size": "data.size",
    "resize": "data.resize",
    "frame_stride": "data.frame_stride",
    "workers": "data.num_workers",
    "lr": "optim.lr",
    "lr_step": "optim.lr_step",
    "iterations": "optim.iterations",
    "batch_size": "optim.batch_size",
    "accum_steps": "optim.accum_steps",
    "out": "run.out_dir",
    "seed": "run.seed",
    "device": "run.device",
    "amp": "run.amp",
    "val_every": "run.val_every",
    "ckpt_every": "run.ckpt_every",
}


# config key -> the flag as typed, for error messages
_FLAG_NAMES = {key: f"--{flag.replace('_', '-')}" for flag, key in _FLAGS.items()} | {"data.kind": "--dataset"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, metavar="YAML", help="configuration file (see --print-config)")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration with every field's type, default and meaning, and exit",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any field, e.g. --set optim.lr=0.01 --set model.layers=[1,1,1,1] (repeatable)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CKPT|auto",
        help="continue from the newest good checkpoint in --out (or from CKPT); 'auto': only if one exists",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", help="registry name (default p3d199; see p3d list-models)")
    g.add_argument(
        "--pretrained", help="P3D weights: a pretrained tag, a converted .safetensors or a p3d train checkpoint"
    )
    g.add_argument("--imagenet-2d", help="initialise from a 2D ImageNet ResNet state dict (paper Sec. 3.3)")
    g.add_argument(
        "--modality",
        choices=("rgb", "flow"),
        help="rgb frames (default) or optical flow (2 input channels: flow files from `p3d flow`, or x/y flow "
        "image folders); a 2D ImageNet init averages conv1's RGB filters for flow (cross-modality init)",
    )
    g.add_argument("--pattern", help="P3D block pattern: ABC (default), A, B, C")
    g.add_argument("--width", type=int, help="channels of conv1 (default 64; e.g. 8 for a tiny CPU model)")
    g.add_argument(
        "--layers", type=int, nargs=4, metavar="N", help="units per stage res2..res5 (e.g. 1 1 1 1 for a tiny model)"
    )
    g.add_argument("--dropout", type=float, help="pool5 dropout (paper: 0.9 for UCF101 fine-tuning)")
    g.add_argument(
        "--no-freeze-bn", action="store_true", help="train every BatchNorm (default: frozen except the first)"
    )
    add_data_arguments(
        p,
        trimmed=False,
        split_help="UCF101 split 1..3, or the Kinetics CSV split value for training",
        subset_help="training subset: UCF101 train, ActivityNet training",
    )
    g = p.add_argument_group("data (more)")
    g.add_argument("--val-root", help="validation folder/manifest (folder and manifest kinds)")
    g.add_argument("--clip-len", type=int, help="frames per clip (paper 16)")
    g.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="crop size (paper 160 160)")
    g.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), help="frames resized to H W first (182 242)")
    g.add_argument("--frame-stride", type=int, help="take every N-th frame (default 1)")
    g.add_argument(
        "--workers",
        type=int,
        help="data loading processes (default: the spare cores; 0 = in-process)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, help="base learning rate (paper 0.001)")
    g.add_argument("--lr-step", type=int, help="divide the lr by 10 every N iterations (paper 60000)")
    g.add_argument("--iterations", type=int, help="iteration budget (paper 150000)")
    g.add_argument("--batch-size", type=int, help="clips per forward pass per process (default 16)")
    g.add_argument("--accum-steps", type=int, help="forward passes per optimizer step (default 8: 128 clips)")
    g = p.add_argument_group("run")
    g.add_argument("--out", help="run directory (default runs/p3d)")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (default), cpu, cuda")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), help="mixed precision (default none)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--val-every", type=int, help="validate every N iterations (0: never)")
    g.add_argument("--ckpt-every", type=int, help="checkpoint every N iterations")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def flags_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The flags given, as typed values by config key (they are checked against the schema, never re-parsed)."""
    out: dict[str, object] = {}
    for flag, key in _FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            out[key] = v
    if getattr(args, "modality", None) is not None:
        out["model.in_channels"] = 2 if args.modality == "flow" else 3
    if getattr(args, "no_freeze_bn", False):
        out["model.freeze_bn"] = False
    if getattr(args, "compile", False):
        out["run.compile"] = True
    if getattr(args, "no_progress", False):
        out["run.progress"] = False
    return out


def run(args: argparse.Namespace) -> int:
    from p3d.engine import DivergenceError, Trainer, load_config
    from p3d.engine.config import describe_config, given_keys
    from p3d.engine.distributed import cleanup
    from p3d.fileio import check_writable

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    flags = flags_from_args(args)
    cfg = load_config(args.config, args.overrides, flags, _FLAG_NAMES)
    if args.print_config:
        print(describe_config(cfg), end="")
        return 0
    check_writable(cfg.run.out_dir)  # a run folder that cannot be written is found now, not at the first checkpoint
    # On --resume the run's saved settings stand, except those given again here (file, flags, --set): they apply
    # when they may change (lr, schedule, budget, validation ...) and are refused with the reason otherwise.
    trainer = Trainer(cfg, resume=args.resume, given=given_keys(args.config, args.overrides, flags))
    ended = False
    try:
        result = trainer.fit()
        ended = True
    except DivergenceError as e:
        print(f"p3d train: {e}", file=sys.stderr)
        return 3
    finally:
        cleanup(sync=ended)
    if not trainer.dist.is_main:
        return 0 if result.status == "completed" else 128 + (result.signal or 15)
    if result.status == "stopped":
        print(
            f"stopped at iteration {result.iteration} (signal {result.signal}); checkpoint {result.checkpoint}; "
            f"continue with: p3d train --out {result.run_dir} --resume"
        )
        return 128 + (result.signal or 15)
    print(
        f"finished {result.iteration} iterations in {result.seconds:.0f} s ({result.clips_per_s:.1f} clips/s); "
        f"checkpoint {result.checkpoint}; weights {result.run_dir / 'model.safetensors'}"
    )
    if result.metrics:
        print(f"last validation: video hit@1 {result.metrics['video_hit@1']:.4f}")
    return 0
