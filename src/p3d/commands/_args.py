"""Argument blocks shared by the commands that read a dataset or build a model, so every command names them alike.

Data (``p3d train``, ``test``, ``extract``, ``check-data``)::

    --dataset KIND (alias --data-kind)   ucf101, kinetics, activitynet, sports1m, folder, manifest
    --data-root ROOT                     the dataset folder (manifest kind: the .csv); a positional
                                         ``[KIND] ROOT`` in extract and check-data
    --annotations, --split, --subset, --classes, --trimmed

Without a kind, ROOT is read by what it is: a folder (class sub-folders give labels), a ``<path> [<label>]``
list file, a ``.csv`` manifest or a single video file (:func:`p3d.data.samples_from_path`).

Model (``p3d test``, ``predict``, ``extract``, ``visualize``, ``export``, ``summary``): ``--weights`` in any form
:func:`p3d.models.resolve_weights` reads (tag, ``.safetensors``, training checkpoint, run folder, port checkpoint,
plain state dict), ``--model`` (needed only without weights or for a plain state dict), ``--num-classes``,
``--model-option``.  The weights decide the architecture, classes and preprocessing.
"""

from __future__ import annotations

import argparse
from typing import Any

from p3d.data.datasets import DATASET_KINDS

# split/subset a test run uses when none is given: the paper's test lists
TEST_DEFAULTS: dict[str, dict[str, Any]] = {
    "ucf101": {"split": 1, "subset": "test"},
    "kinetics": {"split": "val"},
    "activitynet": {"subset": "validation"},
}


def add_data_arguments(
    p: argparse.ArgumentParser,
    *,
    positional: bool = False,
    title: str = "data",
    subset: bool = True,
    trimmed: bool = True,
    split_help: str = "UCF101 split 1..3, or the Kinetics CSV split column value",
    subset_help: str = "UCF101 train/test, ActivityNet training/validation/testing",
) -> None:
    """Add the dataset selection.  ``positional``: ROOT (optionally preceded by KIND) is a positional argument,
    else ``--data-root``.  Values are ``None`` when not given (callers or the config supply defaults)."""
    if positional:
        p.add_argument("pos_kind", nargs="?", choices=DATASET_KINDS, metavar="KIND", help="same as --dataset KIND")
        p.add_argument(
            "data_root",
            metavar="ROOT",
            help="dataset folder; without a KIND: a folder of videos (class sub-folders give labels), a list file "
            "('<path> [<label>]' lines) or a manifest .csv",
        )
    g = p.add_argument_group(title)
    g.add_argument(
        "--dataset",
        "--data-kind",
        dest="data_kind",
        choices=DATASET_KINDS,
        default=None,
        metavar="KIND",
        help=f"dataset format: {', '.join(DATASET_KINDS)}",
    )
    if not positional:
        g.add_argument("--data-root", default=None, help="dataset folder (for 'manifest': the manifest file)")
    g.add_argument(
        "--annotations", default=None, help="UCF101 split folder, Kinetics CSV, ActivityNet JSON or Sports-1M list"
    )
    g.add_argument("--split", default=None, help=split_help)
    if subset:
        g.add_argument("--subset", default=None, help=subset_help)
    g.add_argument("--classes", default=None, help="class names file, one per line (Kinetics, Sports-1M, manifest)")
    if trimmed:
        g.add_argument("--trimmed", action="store_true", help="ActivityNet: one sample per annotated segment")


def data_kind(args: argparse.Namespace) -> str | None:
    """The dataset kind given by ``--dataset`` or the positional KIND (they must agree)."""
    pos, opt = getattr(args, "pos_kind", None), args.data_kind
    if pos is not None and opt is not None and pos != opt:
        raise ValueError(f"dataset kind given twice: {pos!r} and --dataset {opt!r}")
    return pos or opt


# The subsets a split consists of: what `p3d extract` writes when no --subset is given, so that `p3d svm` and
# `p3d similarity` find both the training and the test videos of the split in one store.
SPLIT_SUBSETS: dict[str, tuple[str, ...]] = {"ucf101": ("train", "test"), "activitynet": ("training", "validation")}


def samples_from_args(
    args: argparse.Namespace, *, default_kind: str | None = None, for_test: bool = False, whole_split: bool = False
):
    """The :class:`~p3d.data.SampleList` the data arguments name.  ``for_test``: the paper's test split/subset
    (:data:`TEST_DEFAULTS`) where none is given.  ``whole_split``: without ``--subset``, every subset of the split
    (:data:`SPLIT_SUBSETS`: UCF101 train and test lists, ActivityNet training and validation)."""
    lists = list(subset_samples(args, default_kind=default_kind, for_test=for_test, whole_split=whole_split).values())
    return lists[0].union(*lists[1:])


def subset_samples(
    args: argparse.Namespace, *, default_kind: str | None = None, for_test: bool = False, whole_split: bool = False
) -> dict[str | None, Any]:
    """The sample list of each subset :func:`samples_from_args` joins, by subset name (one ``None`` key when the
    data has no subsets), so a command can say what it read."""
    from p3d.data import build_samples

    kind = data_kind(args) or default_kind
    if args.data_root is None:
        raise ValueError("no dataset root given (--data-root)")
    if kind is None:
        from p3d.data import samples_from_path

        return {None: samples_from_path(args.data_root)}
    defaults = TEST_DEFAULTS.get(kind, {}) if for_test else {}
    split = args.split if args.split is not None else defaults.get("split")
    sub = getattr(args, "subset", None)
    subsets = [sub if sub is not None else defaults.get("subset")]
    if whole_split and sub is None and kind in SPLIT_SUBSETS:
        subsets = list(SPLIT_SUBSETS[kind])
    parts = {
        s: build_samples(
            kind,
            args.data_root,
            annotations=args.annotations,
            split=split,
            subset=s,
            trimmed=getattr(args, "trimmed", False),
            classes=args.classes,
        )
        for s in subsets
    }
    if not any(len(p) for p in parts.values()):
        missing = [m for p in parts.values() for m in getattr(p, "missing", [])]
        if missing:
            raise FileNotFoundError(
                f"{describe_data(args)}: none of the {len(missing)} listed videos is on disk (e.g. {missing[0]})"
            )
        raise ValueError(f"{describe_data(args)}: the dataset lists no videos")
    return parts


def describe_data(args: argparse.Namespace) -> str:
    """``kind:root split=.. subset=..`` (the root alone without a kind), for provenance records."""
    kind = data_kind(args)
    if kind is None:
        return str(args.data_root)
    extra = "".join(
        f" {k}={v}" for k, v in (("split", args.split), ("subset", getattr(args, "subset", None))) if v is not None
    )
    return f"{kind}:{args.data_root}{extra}"


def add_model_arguments(p: argparse.ArgumentParser, *, title: str = "model", weights_flag: bool = True) -> None:
    """Weights in any form (their architecture, classes and preprocessing come along), or a registry model.
    ``weights_flag=False``: the command takes the weights as a positional argument of its own."""
    g = p.add_argument_group(title)
    if weights_flag:
        g.add_argument(
            "--weights",
            "--pretrained",
            dest="weights",
            default=None,
            help="a pretrained tag, .safetensors, p3d train checkpoint or run folder, or the port's checkpoint "
            "(they say which model they are for)",
        )
    g.add_argument(
        "--model",
        default=None,
        help="registry name (see `p3d list-models`): without weights, or for a plain state dict",
    )
    g.add_argument("--num-classes", type=int, default=None, help="classifier size (a new head if the weights differ)")
    g.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor option, YAML value (e.g. width=8, layers=[1,1,1,1]); repeatable",
    )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor keyword arguments of ``--model-option`` / ``--num-classes`` (values checked by the model)."""
    import yaml

    opts: dict[str, Any] = {}
    for kv in args.model_option:
        key, sep, value = kv.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model-option expects KEY=VALUE, got {kv!r}")
        try:
            opts[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"--model-option {kv!r}: the value is not valid YAML") from None
    if args.num_classes is not None:
        if args.num_classes < 0:
            raise ValueError(f"--num-classes must be >= 0, got {args.num_classes}")
        opts["num_classes"] = args.num_classes
    return opts


def model_from_args(args: argparse.Namespace, weights: str | None = None):
    """The model the arguments name: :func:`p3d.models.load_model` of the weights (``--model`` and options may not
    contradict them), or ``create_model(--model, ...)`` without weights."""
    from p3d.models import create_model, load_model

    weights = weights if weights is not None else args.weights
    opts = model_options(args)
    if weights is not None:
        return load_model(weights, args.model, **opts)
    if args.model is None:
        raise ValueError("give --weights (a tag, file or run folder) or --model NAME")
    return create_model(args.model, **opts)


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """Clip length, crop size and resize overriding the model's input spec (its mean/std/colour order stay)."""
    g = p.add_argument_group("input (default: the model's)")
    g.add_argument("--clip-len", type=int, default=None, help="frames per clip")
    g.add_argument("--size", type=int, default=None, help="crop size (square)")
    g.add_argument("--resize", type=int, nargs=2, default=None, metavar=("H", "W"), help="frames resized to H×W")


def apply_input_arguments(model, args: argparse.Namespace) -> None:
    """Apply :func:`add_input_arguments` to ``model.input_spec`` (a resize below the crop grows to fit)."""
    changes: dict[str, Any] = {}
    if args.clip_len is not None:
        if args.clip_len < 1:
            raise ValueError(f"--clip-len must be >= 1, got {args.clip_len}")
        changes["clip_len"] = args.clip_len
    if args.size is not None:
        if args.size < 1:
            raise ValueError(f"--size must be >= 1, got {args.size}")
        changes["size"] = (args.size, args.size)
    if args.resize is not None:
        if min(args.resize) < 1:
            raise ValueError(f"--resize must be two positive integers, got {args.resize}")
        changes["resize"] = tuple(args.resize)
    if not changes:
        return
    spec = model.input_spec.replace(**changes)
    if args.resize is None and (spec.size[0] > spec.resize[0] or spec.size[1] > spec.resize[1]):
        spec = spec.replace(resize=(max(spec.size[0], spec.resize[0]), max(spec.size[1], spec.resize[1])))
    if spec.size[0] > spec.resize[0] or spec.size[1] > spec.resize[1]:
        raise ValueError(f"--size {list(spec.size)} is larger than --resize {list(spec.resize)}")
    model.input_spec = spec


def add_runtime_arguments(p: argparse.ArgumentParser, *, batch_size: int, title: str = "run") -> None:
    """Device, mixed precision, clips per forward pass and decoding workers: named alike in every command."""
    g = p.add_argument_group(title)
    g.add_argument(
        "--batch-size",
        "--clip-batch",
        dest="batch_size",
        type=int,
        default=batch_size,
        help=f"clips per forward pass, taken across videos (default {batch_size}; bounds memory)",
    )
    g.add_argument(
        "--workers", type=int, default=None, help="decoding processes (default: the spare cores; 0 = in-process)"
    )
    g.add_argument(
        "--device", default="auto", help="auto (default: cuda:$LOCAL_RANK if available, else cpu), cpu, cuda:N"
    )
    g.add_argument(
        "--amp",
        choices=("none", "auto", "bf16", "fp16"),
        default="none",
        help="mixed precision (auto: bfloat16 on CPU, float16 on CUDA; default none)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check_positive(**values: int | None) -> None:
    """``--name`` values that must be >= 1 (None: not given): one line naming the first bad one."""
    for name, v in values.items():
        if v is not None and v < 1:
            raise ValueError(f"{_flag(name)} must be >= 1, got {v}")


def check_non_negative(**values: int | float | None) -> None:
    """``--name`` values that must be finite and >= 0 (None: not given), e.g. ``--workers`` (0: in-process)."""
    for name, v in values.items():
        if v is not None and not 0 <= v < float("inf"):
            raise ValueError(f"{_flag(name)} must be >= 0, got {v}")


def check_positive_float(**values: float | None) -> None:
    """``--name`` values that must be finite and > 0 (None: not given), e.g. a learning rate or ``--C``."""
    for name, v in values.items():
        if v is not None and not 0 < v < float("inf"):
            raise ValueError(f"{_flag(name)} must be a finite number > 0, got {v}")


def add_source_argument(p: argparse.ArgumentParser) -> None:
    """A positional SOURCE: a registry name or weights in any form (``p3d summary p3d199``, ``p3d export runs/x``)."""
    p.add_argument("source", nargs="?", default=None, help="a registry name (see `p3d list-models`) or weights")
    add_model_arguments(p)


def model_from_source(args: argparse.Namespace):
    """The model of :func:`add_source_argument`: SOURCE is a registry name, else weights."""
    from p3d.models import list_models

    if args.source is not None:
        if args.source in list_models():
            if args.model is not None and args.model != args.source:
                raise ValueError(f"model given twice: {args.source!r} and --model {args.model!r}")
            args.model = args.source
        elif args.weights is not None:
            raise ValueError(f"weights given twice: {args.source!r} and --weights {args.weights!r}")
        else:
            from pathlib import Path

            from p3d.models.pretrained import list_pretrained

            if not Path(args.source).exists() and args.source not in list_pretrained():
                raise ValueError(
                    f"unknown model {args.source!r}: not a registry model ({', '.join(list_models())}), a weight "
                    f"file, a run folder or a pretrained tag"
                )
            args.weights = args.source
    return model_from_args(args)


def tvl1_params(options: list[str]):
    """``--tvl1 KEY=VALUE`` values as :class:`p3d.flow.TVL1Params` (None: OpenCV's defaults); e.g. ``nscales=3``
    for a cheaper, coarser flow.  A bad key or value is one line naming it."""
    if not options:
        return None
    from dataclasses import fields

    from p3d.flow import TVL1Params

    known = {f.name: f.type for f in fields(TVL1Params)}
    kw: dict[str, Any] = {}
    for kv in options:
        key, sep, value = kv.partition("=")
        key = key.strip().replace("-", "_")
        key = "lambda_" if key == "lambda" else key
        if not sep or key not in known:
            raise ValueError(f"--tvl1 expects KEY=VALUE with KEY one of {', '.join(sorted(known))}, got {kv!r}")
        try:
            kw[key] = int(value) if key in ("nscales", "warps", "inner_iterations", "outer_iterations",
                                            "median_filtering") else float(value)  # fmt: skip
        except ValueError:
            raise ValueError(f"--tvl1 {kv!r}: {value!r} is not a number of the right kind") from None
    return TVL1Params(**kw)


def add_fusion_arguments(p: argparse.ArgumentParser, *, flow_weights_help: str, flow_root_help: str) -> None:
    """The two-stream options of ``test`` and ``predict``: ``--flow-weights``, ``--flow-root``, ``--fusion-weights``
    (late fusion, :mod:`p3d.engine.fusion`)."""
    g = p.add_argument_group("two streams (late fusion)")
    g.add_argument("--flow-weights", default=None, help=flow_weights_help)
    g.add_argument("--flow-root", default=None, help=flow_root_help)
    g.add_argument(
        "--fusion-weights",
        type=float,
        nargs=2,
        default=(1.0, 1.0),
        metavar=("RGB", "FLOW"),
        help="weights of the streams' softmax scores in the fused score (default 1 1; TSN: 1 1.5)",
    )


def add_flow_arguments(p: argparse.ArgumentParser, *, on_the_fly: bool = True) -> None:
    """How optical flow is computed: ``--tvl1 KEY=VALUE`` (``p3d flow`` and on-the-fly flow) and, for the commands
    that run a flow model on RGB videos, ``--flow-from-rgb``, ``--flow-bound``, ``--flow-batch``."""
    g = p.add_argument_group("optical flow")
    if on_the_fly:
        g.add_argument(
            "--flow-from-rgb",
            action="store_true",
            help="the flow model reads RGB videos: TV-L1 flow is computed from the decoded frames (at the model's "
            "resize, then centre-cropped) on --device, batched; without it a flow model reads `p3d flow` files",
        )
        g.add_argument("--flow-bound", type=float, default=20.0, help="flow quantisation bound in pixels (20)")
        g.add_argument(
            "--flow-batch", type=int, default=None, help="frame pairs per TV-L1 call (default 1 on CPU, 64 on a GPU)"
        )
    g.add_argument(
        "--tvl1",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TV-L1 parameter (repeatable; default OpenCV's): tau, lambda, theta, nscales, warps, epsilon, "
        "inner_iterations, outer_iterations, scale_step, gamma, median_filtering",
    )


def flow_from_rgb_from_args(args: argparse.Namespace):
    """The :class:`p3d.data.flowclips.FlowFromRGB` of :func:`add_flow_arguments`, or ``False`` without
    ``--flow-from-rgb``."""
    if not getattr(args, "flow_from_rgb", False):
        return False
    from p3d.data.flowclips import FlowFromRGB
    from p3d.flow.images import _check_bound

    check_positive(flow_batch=args.flow_batch)
    try:
        bound = _check_bound(args.flow_bound)
    except ValueError:
        raise ValueError(f"--flow-bound must be a positive number of pixels, got {args.flow_bound}") from None
    return FlowFromRGB(bound=bound, params=tvl1_params(args.tvl1), batch_size=args.flow_batch)
