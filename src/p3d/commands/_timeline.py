"""Arguments shared by ``p3d predict --timeline`` and ``p3d localize``: the window layout and how segments are
detected (:class:`p3d.evaluation.timeline.DetectionParams`; defaults shown in ``--help``)."""

from __future__ import annotations

import argparse

from p3d.data.dense import DEFAULT_STRIDE, LAST_WINDOW_POLICIES


def add_window_arguments(g: argparse._ArgumentGroup, *, dense_flag: str = "") -> None:
    """``--stride`` and ``--last-window`` (``dense_flag``: the flag they need, named in their help)."""
    need = f" (with {dense_flag})" if dense_flag else ""
    g.add_argument(
        "--stride",
        type=int,
        default=None,
        metavar="FRAMES",
        help=f"frames between window starts{need}; a window is the model's clip, clip length x frame stride frames "
        f"(default {DEFAULT_STRIDE})",
    )
    g.add_argument(
        "--last-window",
        choices=LAST_WINDOW_POLICIES,
        default=None,
        help=f"{need.strip()} 'pad' (default): a last window reaching past the end (last frame repeated) covers the "
        "tail; 'drop': only windows that fit",
    )


def window_options(args: argparse.Namespace) -> tuple[int, str]:
    """``(stride, last)`` from the arguments, checked."""
    from p3d.data.dense import check_stride

    stride = DEFAULT_STRIDE if args.stride is None else args.stride
    return check_stride(stride, "--stride"), args.last_window or "pad"


def add_detection_arguments(p: argparse.ArgumentParser) -> None:
    from p3d.evaluation.localization import SMOOTHING_METHODS
    from p3d.evaluation.timeline import DetectionParams

    d = DetectionParams()
    g = p.add_argument_group("segment detection (per class, on softmax window scores)")
    g.add_argument(
        "--threshold",
        type=float,
        default=d.threshold,
        help=f"a class is on in a window where its smoothed score is >= this (default {d.threshold})",
    )
    g.add_argument(
        "--smoothing",
        type=int,
        default=d.smoothing,
        metavar="WINDOWS",
        help=f"smooth each class's scores over this odd number of windows (default {d.smoothing}; 1: off)",
    )
    g.add_argument(
        "--smoothing-method",
        choices=SMOOTHING_METHODS,
        default=d.smoothing_method,
        help=f"centred mean or gaussian weights (default {d.smoothing_method})",
    )
    g.add_argument(
        "--nms-iou",
        type=float,
        default=d.nms_iou,
        metavar="TIOU",
        help=f"temporal NMS: drop a segment overlapping a better one of its class by more than this tIoU "
        f"(default {d.nms_iou}; 1: off)",
    )
    g.add_argument(
        "--min-duration",
        type=float,
        default=d.min_duration,
        metavar="SECONDS",
        help=f"drop segments shorter than this (default {d.min_duration:g})",
    )


def detection_params(args: argparse.Namespace):
    """The :class:`~p3d.evaluation.timeline.DetectionParams` of the arguments (checked: one-line errors)."""
    from p3d.evaluation.timeline import DetectionParams

    try:
        return DetectionParams(
            threshold=args.threshold,
            smoothing=args.smoothing,
            smoothing_method=args.smoothing_method,
            nms_iou=args.nms_iou,
            min_duration=args.min_duration,
        ).check()
    except ValueError as e:
        raise ValueError(f"--{str(e).replace('_', '-')}") from None
