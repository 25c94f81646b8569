"""``p3d encode STORE -o ENCODED --encoder fv|vlad|fv-vae``: encode local descriptors into video features (Sec. 5).

STORE is written by ``p3d extract --local res5c``.  The encoder is fitted on the training videos only -- the train
list of ``--split TRAIN TEST`` (with several splits: the videos in every train list and in no test list, so one
encoded store serves ``p3d svm`` on all of them), the ids of ``--train-ids FILE``, or every video with an explicit
``--fit-on-all`` (for stores without test videos); without one of them it refuses to fit.  ENCODED is a normal
feature store (``p3d svm``, ``similarity``, ``embed``, ``pca-study`` read it) with the fitted encoder in
``ENCODED/encoder.safetensors``; ``--encoder-file`` encodes other stores with that same fitted encoder.
Resumable: a re-run reuses the saved encoder and skips the videos already encoded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p3d.commands._args import check_positive

FVVAE_FLAGS = ("latent", "hidden", "steps", "finetune_steps", "device")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="feature store written by `p3d extract --local LAYER`")
    p.add_argument("-o", "--output", "--out", required=True, help="encoded feature store (created; resumed)")
    g = p.add_argument_group("encoder (one of)")
    g.add_argument("--encoder", choices=("fv", "vlad", "fv-vae"), default=None, help="fit this encoder")
    g.add_argument(
        "--encoder-file", default=None, metavar="FILE", help="use this fitted encoder (ENCODED/encoder.safetensors)"
    )
    g = p.add_argument_group("training videos the encoder is fitted on (one of)")
    g.add_argument(
        "--split",
        nargs=2,
        action="append",
        default=[],
        metavar=("TRAIN", "TEST"),
        help="split lists as for `p3d svm`; repeated: fitted on the videos in every TRAIN list and no TEST list",
    )
    g.add_argument("--train-ids", default=None, metavar="FILE", help="list of training video ids ('<video> ...' lines)")
    g.add_argument(
        "--fit-on-all",
        action="store_true",
        help="fit on every video of STORE (only for a store holding no test videos)",
    )
    g = p.add_argument_group("encoder settings")
    g.add_argument(
        "--components", type=int, default=64, metavar="K", help="fv: Gaussians; vlad: k-means centres (default 64)"
    )
    g.add_argument("--pca", type=int, default=None, metavar="D", help="fv, vlad: reduce descriptors to D by PCA first")
    g.add_argument(
        "--max-iter", type=int, default=None, metavar="N", help="fv: EM iterations (100); vlad: k-means (300)"
    )
    g.add_argument("--latent", type=int, default=None, help="fv-vae: latent size (default 256, the paper's)")
    g.add_argument("--hidden", type=int, nargs="+", default=None, help="fv-vae: encoder hidden sizes (default 512)")
    g.add_argument("--steps", type=int, default=None, help="fv-vae: unsupervised steps of 512 descriptors (2000)")
    g.add_argument(
        "--finetune-steps", type=int, default=None, help="fv-vae: end-to-end steps with the labels (1000; 0: none)"
    )
    g.add_argument("--device", default=None, help="fv-vae: torch device to train and encode on (default cpu)")
    g.add_argument("--sample", type=int, default=50_000, metavar="M", help="descriptors sampled to fit (default 50000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sample and the encoder (default 0)")
    g = p.add_argument_group("run")
    g.add_argument("--layer", default=None, help="local layer (default: the store's)")
    g.add_argument(
        "--batch-descriptors", type=int, default=4096, help="descriptors encoded together (bounds memory; 4096)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _encoder(args: argparse.Namespace):
    """The encoder to use: loaded from ``--encoder-file`` (fitted) or built from the settings (to be fitted)."""
    from p3d.representation.encoders import FisherVectorEncoder, FVVAEEncoder, VLADEncoder, load_encoder

    if (args.encoder is None) == (args.encoder_file is None):
        raise ValueError("give one of --encoder fv|vlad|fv-vae (fit one) or --encoder-file FILE (use a fitted one)")
    given = [f for f in FVVAE_FLAGS if getattr(args, f) is not None]
    if args.encoder_file is not None:
        fitting = [("--split", bool(args.split)), ("--train-ids", args.train_ids), ("--fit-on-all", args.fit_on_all)]
        fitting += [("--pca", args.pca), ("--max-iter", args.max_iter)]
        fitting += [(f"--{f.replace('_', '-')}", True) for f in given if f != "device"]
        used = [name for name, v in fitting if v]
        if used:
            raise ValueError(f"--encoder-file is fitted already: {', '.join(used)} do not apply")
        return load_encoder(args.encoder_file, device=args.device)
    check_positive(components=args.components, pca=args.pca, max_iter=args.max_iter, sample=args.sample)
    kind = args.encoder
    if kind != "fv-vae" and given:
        raise ValueError(f"--{given[0].replace('_', '-')} applies to --encoder fv-vae, not {kind}")
    if kind == "fv":
        return FisherVectorEncoder(args.components, pca_dim=args.pca, max_iter=args.max_iter or 100, seed=args.seed)
    if kind == "vlad":
        return VLADEncoder(args.components, pca_dim=args.pca, max_iter=args.max_iter or 300, seed=args.seed)
    if args.pca is not None or args.max_iter is not None:
        raise ValueError("--pca and --max-iter apply to --encoder fv and vlad, not fv-vae")
    opts = {f: getattr(args, f) for f in given}
    if "hidden" in opts:
        opts["hidden"] = tuple(opts["hidden"])
    return FVVAEEncoder(seed=args.seed, **opts)


def _fit_ids(args: argparse.Namespace, local) -> tuple[list[str] | None, str]:
    """The training videos (ids of the store) and a description of how they were chosen."""
    from p3d.evaluation.lists import read_split_list, resolve_ids

    chosen = [bool(args.split), args.train_ids is not None, args.fit_on_all]
    if sum(chosen) > 1:
        raise ValueError("choose one of --split, --train-ids and --fit-on-all")
    if args.fit_on_all:
        print(
            f"WARNING: --fit-on-all: the encoder is fitted on all {len(local)} videos of {args.store}; any test video "
            f"among them leaks into the representation (use --split or --train-ids for a train/test evaluation)",
            file=sys.stderr,
        )
        return list(local.ids), "all videos of the store (--fit-on-all)"

    def rows(path: str, what: str) -> set[int]:
        ids = [v for v, _ in read_split_list(path)]
        return set(resolve_ids(local.ids, ids, f"{what} {path}", args.store).tolist())

    if args.train_ids is not None:
        train = rows(args.train_ids, "the training list")
        return [local.ids[r] for r in sorted(train)], f"--train-ids {args.train_ids}"
    if not args.split:
        return None, ""
    trains, tests = [], set()
    for train_file, test_file in args.split:
        tr, te = rows(train_file, "the split list"), rows(test_file, "the split list")
        if tr & te:
            raise ValueError(
                f"{train_file} and {test_file} share {len(tr & te)} video(s), e.g. {local.ids[min(tr & te)]!r}"
            )
        trains.append(tr)
        tests |= te
    fit = set.intersection(*trains) - tests
    if not fit:
        raise ValueError(f"the train lists of the {len(args.split)} splits share no video that is in no test list")
    if len(args.split) == 1:
        scope = f"train list {args.split[0][0]}"
    else:
        scope = f"videos in every train list and no test list of {len(args.split)} splits"
    return [local.ids[r] for r in sorted(fit)], scope


def run(args: argparse.Namespace) -> int:
    from p3d.representation.encode import ENCODER_NAME, encode_store
    from p3d.representation.local import LocalSet

    check_positive(batch_descriptors=args.batch_descriptors)
    local = LocalSet(args.store, args.layer)  # fails first on a store without local descriptors
    encoder = _encoder(args)
    fit_ids, scope = _fit_ids(args, local)
    if encoder.is_fitted:
        scope = f"--encoder-file {args.encoder_file} (fitted on {encoder.fitted_on})"
    elif fit_ids is None and not (Path(args.output) / ENCODER_NAME).exists():
        raise ValueError(
            "the encoder must be fitted on the training videos only: give --split TRAIN TEST, --train-ids FILE, "
            "or --fit-on-all for a store without test videos"
        )
    if fit_ids is not None:
        print(f"fitting {encoder.kind} on {len(fit_ids)} of {len(local)} videos ({scope})")
    stats = encode_store(
        args.store,
        args.output,
        encoder,
        fit_ids=fit_ids,
        fit_scope=scope,
        layer=args.layer,
        max_descriptors=args.sample,
        seed=args.seed,
        batch_descriptors=args.batch_descriptors,
        progress=not args.no_progress,
    )
    enc = stats.encoder
    seen = enc.fitted_on or {}
    how = f"fitted in {stats.fit_seconds:.1f}s" if stats.fitted else "of an earlier run in the output, reused"
    if args.encoder_file is not None:
        how = f"loaded from {args.encoder_file}"
    print(
        f"{args.output}: {stats.written} video(s) encoded, {stats.skipped} already done, {stats.bad} bad "
        f"({stats.videos_per_second:.1f} videos/s); {enc.kind} encodings of {enc.dim} dimensions; encoder {how}, "
        f"fitted on {seen.get('videos')} videos ({seen.get('descriptors')} descriptors): "
        f"{Path(args.output) / ENCODER_NAME}"
    )
    return 0
