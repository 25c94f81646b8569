"""Argument blocks shared by the commands that read a dataset or build a model, so every command names them alike.

Data (``p3d train``, ``test``, ``extract``, ``check-data``)::

    --dataset KIND (alias --data-kind)   ucf101, kinetics, activitynet, sports1m, folder, manifest
    --data-root ROOT                     the dataset folder (manifest kind: the .csv); a positional
                                         ``[KIND] ROOT`` in extract and check-data
    --annotations, --split, --subset, --classes, --trimmed

Without a kind, ROOT is read by what it is: a folder (class sub-folders give labels), a ``<path> [<label>]``
list file or a ``.csv`` manifest (:func:`p3d.features.samples_from_path`).

Model (``p3d extract``, ``visualize``): ``--model``, ``--weights``, ``--num-classes``, ``--model-option``.
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


def samples_from_args(args: argparse.Namespace, *, default_kind: str | None = None, for_test: bool = False):
    """The :class:`~p3d.data.SampleList` the data arguments name.  ``for_test``: the paper's test split/subset
    (:data:`TEST_DEFAULTS`) where none is given."""
    from p3d.data import build_samples

    kind = data_kind(args) or default_kind
    if args.data_root is None:
        raise ValueError("no dataset root given (--data-root)")
    if kind is None:
        from p3d.features import samples_from_path

        return samples_from_path(args.data_root)
    defaults = TEST_DEFAULTS.get(kind, {}) if for_test else {}
    split = args.split if args.split is not None else defaults.get("split")
    sub = getattr(args, "subset", None)
    return build_samples(
        kind,
        args.data_root,
        annotations=args.annotations,
        split=split,
        subset=sub if sub is not None else defaults.get("subset"),
        trimmed=getattr(args, "trimmed", False),
        classes=args.classes,
    )


def describe_data(args: argparse.Namespace) -> str:
    """``kind:root split=.. subset=..`` (the root alone without a kind), for provenance records."""
    kind = data_kind(args)
    if kind is None:
        return str(args.data_root)
    extra = "".join(
        f" {k}={v}" for k, v in (("split", args.split), ("subset", getattr(args, "subset", None))) if v is not None
    )
    return f"{kind}:{args.data_root}{extra}"


def add_model_arguments(p: argparse.ArgumentParser, *, title: str = "model") -> None:
    """A registry model: name, weights (their preprocessing comes along), classifier size, constructor options."""
    g = p.add_argument_group(title)
    g.add_argument("--model", required=True, help="registry name, e.g. p3d199, resnet50_2d (see `p3d list-models`)")
    g.add_argument("--weights", default=None, help="weight file or pretrained tag (its preprocessing is used)")
    g.add_argument("--num-classes", type=int, default=None, help="classifier size (when --weights does not say)")
    g.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor option, YAML value (e.g. width=8, layers=[1,1,1,1]); repeatable",
    )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor keyword arguments of ``--model-option`` / ``--num-classes``."""
    import yaml

    opts: dict[str, Any] = {}
    for kv in args.model_option:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-option expects KEY=VALUE, got {kv!r}")
        opts[key.strip().replace("-", "_")] = yaml.safe_load(value)
    if args.num_classes is not None:
        opts["num_classes"] = args.num_classes
    return opts


def model_from_args(args: argparse.Namespace):
    """``create_model(--model, pretrained=--weights, ...)``; explicit options override the weights' own."""
    from p3d.models import create_model

    opts = model_options(args)
    if args.weights is not None:
        from p3d.models.pretrained import pretrained_options

        opts = {**pretrained_options(args.weights, args.model), **opts}
    return create_model(args.model, pretrained=args.weights, **opts)
