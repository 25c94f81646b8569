"""The ``p3d`` command line: parses arguments and calls the library; nothing else lives here.

Each sub-command is a small module in ``p3d.commands`` with ``add_arguments(parser)`` and ``run(args) -> int``;
they are imported only when used so ``p3d --help`` stays fast.

Errors are one line on stderr, ``p3d COMMAND: error: ...``, with the exit status saying which kind: 2 bad input
(arguments, data, a damaged file), 74 a failed write (full disk, read-only folder, quota; the line names the file
and what was kept), 75 the output is being written by another process (its pid and host are named; try again
later), 130 interrupted.  Commands that stop cleanly on a signal exit with ``128 + signal``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("p3d.commands.summary", "parameters, size, FLOPs and layer count of a model"),
    "list-models": ("p3d.commands.list_models", "list the model registry"),
    "check-data": ("p3d.commands.check_data", "scan a dataset: unreadable/too-short videos, statistics, clean list"),
    "prepare": ("p3d.commands.prepare", "re-encode a dataset folder (training size, short GOP) for fast loading"),
    "convert": ("p3d.commands.convert", "convert the authors' Caffe models or the PyTorch port's checkpoints"),
    "export": ("p3d.commands.export", "export a model to ONNX / TorchScript / torch.export with a parity check"),
    "svm": ("p3d.commands.svm", "linear-SVM evaluation of extracted video features (splits, k-fold, LOO)"),
    "similarity": ("p3d.commands.similarity", "action similarity labeling on video pairs (ASLAN protocol)"),
    "embed": ("p3d.commands.embed", "t-SNE plot of video features coloured by class"),
    "pca-study": ("p3d.commands.pca_study", "plot SVM accuracy against PCA dimension for feature files"),
    "extract": ("p3d.commands.extract", "extract video-level features (pool5, res5c, res4, prob) of a collection"),
    "merge-features": ("p3d.commands.merge_features", "merge the per-rank parts of a feature store into one file"),
    "visualize": ("p3d.commands.visualize", "DeepDraw: a clip that maximises one class score (GIF/MP4 + PNG strip)"),
    "train": ("p3d.commands.train", "train a model with the paper's protocol (resumable, torchrun-distributed)"),
    "test": ("p3d.commands.test", "video-level test: 20 clips per video, hit@1/hit@5, per-class, confusion"),
    "predict": ("p3d.commands.predict", "top-k labels of video files"),
    "verify": ("p3d.commands.verify", "check the checksums of a feature store, a run folder, a checkpoint or weights"),
    "demo": ("p3d.commands.demo", "P3D vs a frame-level 2D ResNet on motion-only synthetic actions (CPU minutes)"),
}


EXIT_STORAGE = 74  # sysexits.h EX_IOERR
EXIT_LOCKED = 75  # sysexits.h EX_TEMPFAIL: try again when the other writer has finished


def build_parser(argv_command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p3d", description="Pseudo-3D Residual Networks for video.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if argv_command == name:  # only import the module of the command actually run
            importlib.import_module(module).add_arguments(p)
    return parser


# glibc serves allocations above its mmap threshold (at most 32 MiB by default) with fresh mmaps, so every large
# activation is page-faulted and zeroed again on each forward: up to 2x slower (BENCHMARKS.md, "Models").  These
# tunables keep such blocks in the heap; glibc reads them only at start-up, hence the one re-exec.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


def _reexec_with_malloc_tunables() -> None:
    """Re-run this command once with ``GLIBC_TUNABLES`` set, unless the user set it, preloads an allocator
    (tcmalloc/jemalloc), or opts out with ``P3D_NO_MALLOC_TUNE=1``."""
    env = os.environ
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in env or "LD_PRELOAD" in env:
        return
    if env.get("P3D_NO_MALLOC_TUNE") or not getattr(sys, "orig_argv", None):
        return
    try:
        os.execve(sys.executable, sys.orig_argv, {**env, "GLIBC_TUNABLES": MALLOC_TUNABLES})
    except OSError:
        pass  # run as is


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the console script / python -m p3d, not a library call
        _reexec_with_malloc_tunables()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from p3d.errors import OutputLockedError, StorageError

    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except StorageError as e:  # full disk, read-only folder: one line naming the file and what was kept
        print(f"p3d {args.command}: error: {e}", file=sys.stderr)
        return EXIT_STORAGE
    except OutputLockedError as e:  # another process writes this output
        print(f"p3d {args.command}: error: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except (FileNotFoundError, ValueError) as e:  # user errors: one clear line, no traceback
        print(f"p3d {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
