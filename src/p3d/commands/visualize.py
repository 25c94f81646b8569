"""``p3d visualize --model NAME --class C -o class.gif``: DeepDraw class visualisation (paper, Fig. 5)."""

from __future__ import annotations

import argparse
from pathlib import Path

from p3d.commands._args import add_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--class", dest="cls", required=True, help="class index, or a name from --classes")
    p.add_argument("--classes", default=None, help="class names file (one per line, or '<index> <name>')")
    p.add_argument("-o", "--output", required=True, help="animation to write: .gif or .mp4")
    p.add_argument("--strip", default=None, help="PNG strip of frames (default: OUTPUT with .png)")
    p.add_argument("--steps", type=int, default=40, help="gradient steps per octave (default 40)")
    p.add_argument("--octaves", type=int, default=3, help="number of resolutions, each 2x the previous (default 3)")
    p.add_argument("--lr", type=float, default=0.03, help="step size in normalised input units (default 0.03)")
    p.add_argument("--jitter", type=int, default=4, help="random shift in pixels (default 4)")
    p.add_argument("--blur", type=float, nargs=2, default=[1.0, 0.3], metavar=("START", "END"), help="blur sigma")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=2, help="upscale the written frames by this factor (default 2)")
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda:N")


def run(args: argparse.Namespace) -> int:
    import torch

    from p3d.commands._args import check_non_negative, check_positive, check_positive_float, model_from_args
    from p3d.engine.distributed import pick_device
    from p3d.engine.memory import MemoryEstimate, check_memory, estimate_training
    from p3d.fileio import check_writable
    from p3d.representation.visualize import DeepDrawConfig, class_index_of, deepdraw, write_animation, write_strip

    check_positive(steps=args.steps, octaves=args.octaves, scale=args.scale, fps=args.fps)
    check_positive_float(lr=args.lr)
    check_non_negative(jitter=args.jitter, seed=args.seed)
    if not all(0 <= b < float("inf") for b in args.blur):
        raise ValueError(f"--blur must be two finite sigmas >= 0, got {args.blur}")
    if Path(args.output).suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"{args.output}: the animation must be a .gif or .mp4 file")
    check_writable(Path(args.output).parent)  # before the gradient steps, not after them
    model = model_from_args(args)
    names = list(model.pretrained_cfg.class_names or []) or None
    if args.classes:
        from p3d.evaluation.lists import read_class_index

        names = list(read_class_index(args.classes).names)
    cls = class_index_of(args.cls, names)
    if args.octaves < 1:
        raise ValueError(f"--octaves must be >= 1, got {args.octaves}")
    h, w = model.input_spec.size
    sizes = tuple((max(8, h >> k), max(8, w >> k)) for k in range(args.octaves - 1, -1, -1))
    cfg = DeepDrawConfig(
        steps_per_octave=args.steps,
        octave_sizes=sizes,
        lr=args.lr,
        jitter=args.jitter,
        blur_start=args.blur[0],
        blur_end=args.blur[1],
        seed=args.seed,
    )
    device = pick_device(args.device)
    check_memory(estimate_training(model, batch_size=1, num_workers=0, device=device), "DeepDraw (gradient steps)")
    frames = model.input_spec.clip_len * h * w * 3 * args.scale**2  # upscaled uint8, held twice while encoding
    need = MemoryEstimate(torch.device("cpu"), host={"upscaled frames": 2 * frames})
    check_memory(need, "writing the animation", "use a smaller --scale")
    res = deepdraw(model, cls, cfg, device=device)
    label = f"{cls} ({names[cls]})" if names else str(cls)
    print(f"class {label}: logit {res.scores[0]:.3f} -> {res.scores[-1]:.3f} over {len(res.scores) - 1} steps")
    print(f"wrote {write_animation(res.frames, args.output, fps=args.fps, scale=args.scale)}")
    strip = args.strip or str(Path(args.output).with_suffix(".png"))
    print(f"wrote {write_strip(res.frames, strip, scale=args.scale)}")
    return 0
