"""What the checksums of issue 10 cost: checkpoints and feature parts with and without them, side by side.

    python benchmarks/bench_integrity.py --model p3d199 --repeats 5

* checkpoint: a training state of ``--model`` (weights + SGD momentum buffers, as ``Trainer`` saves it) written with
  :func:`p3d.engine.checkpoint.save_checkpoint` (serialise + SHA-256 of the state + atomic write) against the same
  serialisation and atomic write without the checksum; read back with :func:`load_checkpoint` (verifying) against a
  plain ``torch.load``;
* features: a store of ``--videos`` pool5 descriptors (2048-d) read with :func:`read_features` (verifying every
  part) against the raw ``safetensors`` load of the same files.

Prints medians over ``--repeats`` (seconds) and the ratios; run on a quiet machine.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from safetensors.numpy import load_file

    from p3d.engine import checkpoint as ck
    from p3d.fileio import atomic_write_bytes
    from p3d.models import create_model
    from p3d.representation.store import FeatureWriter, list_parts, read_features

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="p3d199")
    p.add_argument("--videos", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    model = create_model(args.model, num_classes=400)
    state = {
        "model": model.state_dict(),
        "optimizer": {"state": {i: {"momentum_buffer": q.detach().clone()} for i, q in enumerate(model.parameters())}},
        "iteration": 1000,
    }
    mb = sum(t.numel() * t.element_size() for t in state["model"].values()) * 2 / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt-00001000.pt"

        def plain_save() -> None:
            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(path.with_name("plain.pt"), buf.getvalue())

        save_plain = _median(plain_save, args.repeats)
        save_sum = _median(lambda: ck.save_checkpoint(path, state), args.repeats)
        load_plain = _median(lambda: torch.load(path, weights_only=True), args.repeats)
        load_sum = _median(lambda: ck.load_checkpoint(path), args.repeats)
        print(f"checkpoint of {args.model} ({mb:.0f} MB of tensors)")
        print(f"  save: {save_plain:.2f} s plain, {save_sum:.2f} s with checksum ({save_sum / save_plain:.2f}x)")
        print(f"  load: {load_plain:.2f} s plain, {load_sum:.2f} s verified ({load_sum / load_plain:.2f}x)")

        store = Path(tmp) / "store"
        rng = np.random.default_rng(0)
        with FeatureWriter(store, {"model": args.model}, flush_every=256) as w:
            for i in range(args.videos):
                w.add(f"v{i:06d}", {"pool5": rng.standard_normal(2048).astype(np.float32)})
        parts = list_parts(store)
        raw = _median(lambda: [load_file(str(q)) for q in parts], args.repeats)
        verified = _median(lambda: read_features(store), args.repeats)
        print(f"feature store: {args.videos} videos x 2048-d in {len(parts)} parts")
        print(f"  read: {raw:.3f} s raw safetensors, {verified:.3f} s read_features verified ({verified / raw:.2f}x)")


if __name__ == "__main__":
    main()
