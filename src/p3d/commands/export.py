"""``p3d export MODEL|WEIGHTS -o FILE``: ONNX (opset 18, dynamic batch), TorchScript trace or ``torch.export`` program,
each checked against PyTorch on random clips (max |Δ| printed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from p3d.commands._args import add_source_argument, check_positive, model_from_source


def add_arguments(p: argparse.ArgumentParser) -> None:
    from p3d.convert.export import DEFAULT_OPSET

    add_source_argument(p)
    p.add_argument("-o", "--output", required=True, help="output file: .onnx, .pt (TorchScript) or .pt2 (torch.export)")
    p.add_argument("--format", choices=("onnx", "torchscript", "export"), help="default: from the output suffix")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--batch", type=int, default=1, help="batch size of the check clip (ONNX/.pt2 batch is dynamic)")
    p.add_argument("--clip-len", type=int, default=None, help="frames per clip (default: the model's, 16)")
    p.add_argument("--size", type=int, default=None, help="crop size (default: the model's, 160)")
    p.add_argument("--in-channels", type=int, default=None, help="3 RGB, 2 optical flow")
    p.add_argument("--atol", type=float, default=1e-4, help="parity tolerance relative to max(1, |output|)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check")


def run(args: argparse.Namespace) -> int:
    from p3d.commands._args import check_non_negative
    from p3d.convert.export import export_model
    from p3d.engine.memory import check_memory, estimate_inference
    from p3d.fileio import check_writable

    out = Path(args.output)
    fmt = args.format or {".onnx": "onnx", ".pt": "torchscript", ".pt2": "export"}.get(out.suffix)
    if fmt is None:
        raise ValueError(f"{out}: cannot tell the format from the suffix; use .onnx, .pt, .pt2 or --format")
    check_positive(batch=args.batch, clip_len=args.clip_len, size=args.size, opset=args.opset)
    check_non_negative(atol=args.atol)
    check_writable(out.parent)
    if args.in_channels is not None:
        args.model_option.append(f"in_channels={args.in_channels}")
    model = model_from_source(args).eval()
    spec = model.input_spec
    t = args.clip_len or spec.clip_len
    h, w = (args.size, args.size) if args.size else spec.size
    check_memory(  # the parity check runs batches of 1 and 2 clips besides --batch
        estimate_inference(model, spec.replace(clip_len=t, size=(h, w)), batch_size=max(2, args.batch), decoding=False),
        "exporting (trace and parity check)",
    )
    kwargs = {"check": not args.no_check, "atol": args.atol}
    if fmt == "onnx":
        kwargs["opset"] = args.opset
    result = export_model(model, out, fmt, (args.batch, spec.channels, t, h, w), **kwargs)
    print(result)
    return 0
