"""Model speed on CPU (issue 2, "Speed"): ratios measured side by side in one process.

Sections (each prints a table; every timing is a median over ``--reps`` repetitions, the configurations of a
table interleaved repetition by repetition so machine load hits them alike):

* ``2d``      P3D-63 forward vs the same-schedule 2D ResNet-50 (``pattern="S"``: 2D bottlenecks, same temporal
              pooling, res2..res5 on T = 8, 4, 2, 1), normalised by their FLOP ratio: ≤ 1.00 means P3D's extra
              temporal convs cost no more per FLOP than the 2D convs.  fp32 and bf16 autocast.
* ``port``    P3D-63 vs the port's formulation (plain NCDHW ``nn.Conv3d``, ``nn.MaxPool3d``; see
              ``_port_formulation.py``), same weights, outputs checked equal first: forward fp32/bf16, training
              step (forward + backward + SGD) bf16.
* ``fuse``    inference as the commands run it (:func:`p3d.engine.inference.for_inference`: BatchNorm folded into the
              convolutions, :func:`p3d.models.fuse_for_inference`) against the eval-mode model, outputs checked
              equal first: forward fp32/bf16.
* ``compile`` ``torch.compile``: inference with BatchNorm folded (:func:`p3d.models.fuse_for_inference`) and a
              compiled training step, against eager.
* ``alloc``   the forward in child processes under glibc malloc, glibc tunables, tcmalloc and jemalloc.

Usage::

    python benchmarks/bench_models.py                          # 2d, port, alloc
    python benchmarks/bench_models.py --sections compile --compile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _port_formulation import check_equal, port_from  # noqa: E402
from p3d.models import count_flops, create_model, fuse_for_inference  # noqa: E402

LIBDIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
ALLOCATORS = {
    "glibc malloc (default)": {},
    "glibc + GLIBC_TUNABLES hugetlb=1": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "glibc + GLIBC_TUNABLES mmap/trim threshold": {
        "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
    },
    "tcmalloc (LD_PRELOAD)": {"LD_PRELOAD": "libtcmalloc_minimal.so.4"},
    "jemalloc (LD_PRELOAD)": {"LD_PRELOAD": "libjemalloc.so.2"},
}


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, calling them in turn ``reps`` times after ``warmup`` calls each."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def forward_fn(model, x, bf16: bool) -> Callable[[], object]:
    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x)

    return run


def train_fn(model, x, y, bf16: bool = True) -> Callable[[], object]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def clip(args, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, args.frames, args.size, args.size, generator=g)


def dtypes(args) -> list[bool]:
    return {"fp32": [False], "bf16": [True], "both": [False, True]}[args.dtype]


def row(*cells) -> None:
    print("  ".join(f"{c:<44}" if i == 0 else f"{c:>12}" for i, c in enumerate(cells)))


# sections ------------------------------------------------------------------------------------------------
def section_2d(args) -> None:
    p3d = create_model("p3d63").eval()
    two_d = create_model("p3d63", pattern="S").eval()
    x = clip(args, args.batch)
    f_p3d, f_2d = count_flops(p3d, x[:1]), count_flops(two_d, x[:1])
    flop_ratio = f_p3d / f_2d
    print(f"\n== P3D-63 vs same-schedule 2D ResNet-50, forward, batch {args.batch}, {args.frames}×{args.size}²")
    print(f"FLOPs per clip: P3D-63 {f_p3d / 1e9:.2f} G, 2D {f_2d / 1e9:.2f} G, ratio {flop_ratio:.3f}")
    row("", "P3D s", "2D s", "time ratio", "÷ FLOP ratio", "target")
    res = {}
    for bf in dtypes(args):
        t = interleaved({"p3d": forward_fn(p3d, x, bf), "2d": forward_fn(two_d, x, bf)}, args.reps)
        r = t["p3d"] / t["2d"]
        res[bf] = t
        row(
            "bf16 autocast" if bf else "fp32",
            f"{t['p3d']:.3f}",
            f"{t['2d']:.3f}",
            f"{r:.3f}",
            f"{r / flop_ratio:.3f}",
            "≤ 1.00",
        )
    if len(res) == 2:
        print(
            f"bf16 speed-up over fp32 (P3D-63): {res[False]['p3d'] / res[True]['p3d']:.2f}×, "
            f"(2D): {res[False]['2d'] / res[True]['2d']:.2f}×  (measured in separate interleaved runs)"
        )


def section_port(args) -> None:
    torch.manual_seed(0)
    p3d = create_model("p3d63")
    port = port_from(p3d)
    err = check_equal(p3d, port, torch.randn(1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(1)))
    print(f"\n== P3D-63 vs the port's NCDHW nn.Conv3d formulation (same weights; pool5 max rel. error {err:.1e})")
    row("", "p3d s", "port s", "speed-up", "target")
    x = clip(args, args.batch)
    p3d.eval(), port.eval()
    for bf in dtypes(args):
        t = interleaved({"p3d": forward_fn(p3d, x, bf), "port": forward_fn(port, x, bf)}, args.reps)
        row(
            f"forward batch {args.batch} " + ("bf16 autocast" if bf else "fp32"),
            f"{t['p3d']:.3f}",
            f"{t['port']:.3f}",
            f"{t['port'] / t['p3d']:.2f}×",
            "≥ 3.5×" if bf else "≥ 1.3×",
        )
    p3d.train(), port.train()
    xt = clip(args, args.train_batch)
    y = torch.arange(args.train_batch) % 400
    t = interleaved({"p3d": train_fn(p3d, xt, y), "port": train_fn(port, xt, y)}, args.train_reps)
    row(
        f"train step batch {args.train_batch} bf16, BN training mode",
        f"{t['p3d']:.3f}",
        f"{t['port']:.3f}",
        f"{t['port'] / t['p3d']:.2f}×",
        "≥ 1.8×",
    )
    # The paper's protocol (Sec. 4.1, `p3d train`'s default): every BatchNorm frozen except the first.
    p3d.freeze_bn(keep_first=True)
    for name, m in port.named_modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) and name != "bn1":
            m.eval()
            m.requires_grad_(False)
    t = interleaved({"p3d": train_fn(p3d, xt, y), "port": train_fn(port, xt, y)}, args.train_reps)
    row(
        f"train step batch {args.train_batch} bf16, BN frozen but bn1",
        f"{t['p3d']:.3f}",
        f"{t['port']:.3f}",
        f"{t['port'] / t['p3d']:.2f}×",
        "≥ 1.8×",
    )


def section_fuse(args) -> None:
    print(f"\n== BatchNorm folded (what test/predict/extract run) vs eval mode, P3D-63, {args.frames}x{args.size}^2")
    torch.manual_seed(0)
    model = create_model("p3d63").eval()
    for m in model.modules():  # non-trivial statistics, as trained weights have
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    fused = fuse_for_inference(model)
    x = clip(args, args.batch)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    err = ((ref - out).abs().max() / ref.abs().max()).item()
    if err > 1e-4:
        raise SystemExit(f"folded model differs from the eval model: max rel err {err:.1e}")
    row("", "eval s", "folded s", "speed-up")
    for bf in dtypes(args):
        t = interleaved({"eval": forward_fn(model, x, bf), "folded": forward_fn(fused, x, bf)}, args.reps)
        row(
            f"inference batch {args.batch} " + ("bf16" if bf else "fp32") + f" (fp32 max rel err {err:.0e})",
            f"{t['eval']:.3f}",
            f"{t['folded']:.3f}",
            f"{t['eval'] / t['folded']:.2f}x",
        )


def section_compile(args) -> None:
    print(f"\n== torch.compile (inductor), P3D-63, {args.frames}×{args.size}²")
    torch.manual_seed(0)
    model = create_model("p3d63").eval()
    fused = fuse_for_inference(model)
    x = clip(args, args.batch)
    compiled = torch.compile(fused)
    row("", "eager s", "fused s", "compiled s", "compile s", "speed-up")
    for bf in dtypes(args):
        t0 = time.perf_counter()
        forward_fn(compiled, x, bf)()
        ct = time.perf_counter() - t0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
            ref, out = model(x), compiled(x)
        err = ((ref.float() - out.float()).abs().max() / ref.float().abs().max()).item()
        t = interleaved(
            {
                "eager": forward_fn(model, x, bf),
                "fused": forward_fn(fused, x, bf),
                "compiled": forward_fn(compiled, x, bf),
            },
            args.reps,
        )
        row(
            f"inference batch {args.batch} " + ("bf16" if bf else "fp32") + f" (max rel err {err:.0e})",
            f"{t['eager']:.3f}",
            f"{t['fused']:.3f}",
            f"{t['compiled']:.3f}",
            f"{ct:.0f}",
            f"{t['eager'] / t['compiled']:.2f}×",
        )
    eager_m = create_model("p3d63").train()
    comp_m = create_model("p3d63").train()
    comp_m.load_state_dict(eager_m.state_dict())
    comp_fwd = torch.compile(comp_m)
    xt = clip(args, args.train_batch)
    y = torch.arange(args.train_batch) % 400
    step_c = train_fn(comp_fwd, xt, y)
    t0 = time.perf_counter()
    step_c()
    ct = time.perf_counter() - t0
    t = interleaved({"eager": train_fn(eager_m, xt, y), "compiled": step_c}, args.train_reps)
    row(
        f"train step batch {args.train_batch} bf16",
        f"{t['eager']:.3f}",
        "",
        f"{t['compiled']:.3f}",
        f"{ct:.0f}",
        f"{t['eager'] / t['compiled']:.2f}×",
    )


def _find_lib(name: str) -> str | None:
    for d in LIBDIRS:
        p = Path(d) / name
        if p.exists():
            return str(p)
    return None


def section_alloc(args) -> None:
    print(
        f"\n== allocator: P3D-63 forward fp32 batch {args.batch} in a child process per allocator "
        f"({args.alloc_rounds} rounds, interleaved; median of {args.reps} forwards per child)"
    )
    configs = {}
    for name, env in ALLOCATORS.items():
        env = dict(env)
        if "LD_PRELOAD" in env:
            lib = _find_lib(env["LD_PRELOAD"])
            if lib is None:
                print(f"  {name}: {env['LD_PRELOAD']} not installed, skipped")
                continue
            env["LD_PRELOAD"] = lib
        configs[name] = env
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    base.update(P3D_NO_MALLOC_TUNE="1")
    results: dict[str, list[dict]] = {k: [] for k in configs}
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--batch",
        str(args.batch),
        "--reps",
        str(args.reps),
        "--frames",
        str(args.frames),
        "--size",
        str(args.size),
    ]
    for _ in range(args.alloc_rounds):
        for name, env in configs.items():
            out = subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True, check=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
    row("", "forward s", "vs glibc", "page faults", "sys s")
    ref = statistics.median(r["time"] for r in results["glibc malloc (default)"])
    for name, rs in results.items():
        t = statistics.median(r["time"] for r in rs)
        row(
            name,
            f"{t:.3f}",
            f"{ref / t:.2f}×",
            f"{statistics.median(r['faults'] for r in rs):.0f}",
            f"{statistics.median(r['sys'] for r in rs):.2f}",
        )


def child(args) -> None:
    import resource

    torch.manual_seed(0)
    model = create_model("p3d63").eval()
    x = clip(args, args.batch)
    f = forward_fn(model, x, False)
    f()
    times, faults, sys_t = [], [], []
    for _ in range(args.reps):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(r1.ru_minflt - r0.ru_minflt)
        sys_t.append(r1.ru_stime - r0.ru_stime)
    med = statistics.median
    print(json.dumps({"time": med(times), "faults": med(faults), "sys": med(sys_t)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="2d,port,alloc", help="comma list of 2d, port, fuse, compile, alloc")
    ap.add_argument("--compile", action="store_true", help="add the torch.compile section (slow to compile)")
    ap.add_argument("--batch", type=int, default=4, help="forward batch (default 4)")
    ap.add_argument("--train-batch", type=int, default=2, help="training-step batch (default 2)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per configuration")
    ap.add_argument("--train-reps", type=int, default=3, help="timed training steps per configuration")
    ap.add_argument("--alloc-rounds", type=int, default=2, help="child processes per allocator")
    ap.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    sections = [s for s in args.sections.split(",") if s]
    if args.compile and "compile" not in sections:
        sections.append("compile")
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu}, "
        f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r} GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}"
    )
    for s in sections:
        sections_by_name = {
            "2d": section_2d,
            "port": section_port,
            "fuse": section_fuse,
            "compile": section_compile,
            "alloc": section_alloc,
        }
        sections_by_name[s](args)


if __name__ == "__main__":
    main()
