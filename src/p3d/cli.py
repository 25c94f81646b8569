"""The ``p3d`` command line: parses arguments and calls the library; nothing else lives here.

Each sub-command is a small module in ``p3d.commands`` with ``add_arguments(parser)`` and ``run(args) -> int``;
they are imported only when used so ``p3d --help`` stays fast.

Errors never end in a traceback: each is one line on stderr, ``p3d COMMAND: error: ...``, naming the file or
argument, with the exit status saying which kind: 2 bad input (a missing or malformed file, a value out of range, a
size whose memory cannot fit, a damaged file), 74 a failed write (full disk, read-only folder, quota; the line names
the file and what was kept), 75 the output is being written by another process (its pid and host are named; try
again later), 130 interrupted, 1 anything unexpected (with the exception's type and a hint).  Commands that stop
cleanly on a signal exit with ``128 + signal``.  ``--debug`` (before or after the command) or ``P3D_DEBUG=1``
prints the traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("p3d.commands.summary", "parameters, size, FLOPs and layer count of a model"),
    "list-models": ("p3d.commands.list_models", "list the model registry"),
    "check-data": ("p3d.commands.check_data", "scan a dataset: unreadable/too-short videos, statistics, clean list"),
    "prepare": ("p3d.commands.prepare", "re-encode a dataset folder (training size, short GOP) for fast loading"),
    "flow": ("p3d.commands.flow", "TV-L1 optical flow of a dataset into lossless .flow.mkv files (resumable)"),
    "convert": ("p3d.commands.convert", "convert the authors' Caffe models or the PyTorch port's checkpoints"),
    "export": ("p3d.commands.export", "export a model to ONNX / TorchScript / torch.export with a parity check"),
    "svm": ("p3d.commands.svm", "linear-SVM evaluation of extracted video features (splits, k-fold, LOO)"),
    "similarity": ("p3d.commands.similarity", "action similarity labeling on video pairs (ASLAN protocol)"),
    "embed": ("p3d.commands.embed", "t-SNE plot of video features coloured by class"),
    "pca-study": ("p3d.commands.pca_study", "plot SVM accuracy against PCA dimension for feature files"),
    "extract": ("p3d.commands.extract", "extract video-level features (pool5, res5c, res4, prob) of a collection"),
    "encode": ("p3d.commands.encode", "encode local descriptors (extract --local): FV, VLAD, FV-VAE"),
    "merge-features": ("p3d.commands.merge_features", "merge the per-rank parts of a feature store into one file"),
    "visualize": ("p3d.commands.visualize", "DeepDraw: a clip that maximises one class score (GIF/MP4 + PNG strip)"),
    "train": ("p3d.commands.train", "train a model with the paper's protocol (resumable, torchrun-distributed)"),
    "test": ("p3d.commands.test", "video-level test: 20 clips per video, hit@1/hit@5, per-class, confusion"),
    "predict": ("p3d.commands.predict", "top-k labels of video files (--timeline: action segments along long videos)"),
    "localize": ("p3d.commands.localize", "temporal action localisation mAP@tIoU (ActivityNet) of a dense store"),
    "verify": ("p3d.commands.verify", "check the checksums of a feature store, a run folder, a checkpoint or weights"),
    "demo": ("p3d.commands.demo", "P3D vs a frame-level 2D ResNet on motion-only synthetic actions (CPU minutes)"),
}


DEBUG_HELP = "on an error, print the traceback too (or set P3D_DEBUG=1)"
EXIT_STORAGE = 74  # sysexits.h EX_IOERR
EXIT_LOCKED = 75  # sysexits.h EX_TEMPFAIL: try again when the other writer has finished


def build_parser(argv_command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p3d", description="Pseudo-3D Residual Networks for video.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # SUPPRESS: an absent sub-command flag must not reset a --debug given before the command
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        if argv_command == name:  # only import the module of the command actually run
            importlib.import_module(module).add_arguments(p)
    return parser


def describe_error(e: BaseException) -> tuple[str, int]:
    """One line for an exception that ends a command, and the exit status: 2 for bad input (the message names the
    file or argument), 74 for a failed write, 75 for an output locked by another writer, 1 for anything unexpected
    (with the type and how to see the traceback)."""
    from p3d.errors import OutputLockedError, P3DError, StorageError, is_out_of_memory

    if isinstance(e, StorageError):  # full disk, read-only folder: names the file and what was kept
        return str(e), 2 if e.bad_path else EXIT_STORAGE
    if isinstance(e, OutputLockedError):  # another process writes this output
        return str(e), EXIT_LOCKED
    if is_out_of_memory(e):
        m = re.search(r"allocate (\d+) bytes", str(e))
        size = f" {int(m.group(1)) / 2**30:.1f} GiB" if m else ""
        return f"out of memory: could not allocate{size}; use a smaller model, clip size or batch size", 2
    if isinstance(e, UnicodeDecodeError):
        return f"a file given is not UTF-8 text ({e.reason} at byte {e.start})", 2
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, P3DError):
        where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
        return f"{where}: {e.strerror or e}", 2
    # a multi-line message (e.g. a list of mismatched keys) becomes one line: "; " joins its lines
    text = re.sub(r"([:,;]?)\s*\n\s*", lambda m: m.group(1) + (" " if m.group(1) else "; "), str(e).strip())
    if isinstance(e, (P3DError, ValueError, OSError, ImportError)):  # ImportError: an optional extra is missing
        return text or type(e).__name__, 2
    hint = "run with --debug for the traceback"
    return f"{type(e).__name__}: {text} ({hint})" if text else f"{type(e).__name__} ({hint})", 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # global options take no values
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("P3D_DEBUG", "") not in ("", "0")
    try:
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`p3d ... | head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except Exception as e:  # noqa: BLE001 - the one place every error of a command becomes one line
        if debug:
            import traceback

            traceback.print_exc()
        message, status = describe_error(e)
        print(f"p3d {args.command}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
