"""benchmarks/gpu_suite.py at tiny sizes on the CPU, so the one-command GPU suite never rots: every section runs and
reports consistent numbers, one failing or hanging section loses nothing else, sizes follow the device's memory,
and the convolution decision follows the measurements."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = mod
    spec.loader.exec_module(mod)
    return mod


suite = _load_suite()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out, work = tmp_path_factory.mktemp("suite_out"), tmp_path_factory.mktemp("suite_work")
    args = ["--tiny", "--in-process", "--device", "cpu", "--compile-backend", "eager"]
    assert suite.main([*args, "--out", str(out), "--work", str(work)]) == 0
    results = json.loads((out / "gpu_suite.json").read_text())
    return results, (out / "gpu_suite.md").read_text()


def rows(results, name):
    return results["sections"][name]["rows"]


def test_every_section_runs_and_is_reported(tiny_run):
    results, md = tiny_run
    assert list(results["sections"]) == list(suite.SECTIONS)
    for name, sec in results["sections"].items():
        assert sec["status"] == "ok", (name, sec.get("error"), sec.get("traceback"))
        assert f"## {name}: ok" in md
        assert 0 <= sec["seconds"] <= sec["budget_s"] + 5
    env = results["environment"]
    assert env["device"] == "cpu" and env["cores"] >= 1 and env["default_conv_impl"]["cuda"] in ("views", "conv3d")
    assert results["sizes"]["tiny"] is True


def test_formulations_are_checked_equal(tiny_run):
    results, _ = tiny_run
    checks = {r["check"]: r for r in rows(results, "equal")}
    fp32 = [c for c in checks if "bf16" not in c]
    assert len(fp32) == 6  # forward pool5/logits, two gradient checks, BN folding, port (no device-vs-CPU on a CPU)
    for name in fp32:
        assert checks[name]["ok"] and checks[name]["error"] < checks[name]["tol"], checks[name]
    assert any("port" in c for c in fp32) and any("BN-folded" in c for c in fp32)
    # the bf16 gradient check is recorded whatever it finds (torch 2.13's CPU bf16 conv3d weight gradient on a
    # 2-frame input is broken; the CUDA run will say whether cuDNN's is)
    bf16 = [checks[c] for c in checks if "bf16" in c]
    assert len(bf16) == 1 and bf16[0]["tol"] == 5e-2
    assert "worst" in bf16[0] or bf16[0]["error"] == 0  # the worst conv is named whenever any differs


def test_forward_covers_the_grid_with_consistent_numbers(tiny_run):
    results, md = tiny_run
    sec = results["sections"]["forward"]
    got = {(r["model"], r["net"], r["impl"], r["dtype"], r["batch"]) for r in sec["rows"]}
    variants = [("p3d", "views"), ("p3d", "conv3d"), ("2d", "views"), ("2d", "conv3d"), ("port", "-")]
    want = {(m, n, i, d, 2) for m in ("p3d199", "p3d63") for n, i in variants for d in ("bf16", "fp16")}
    assert got == want
    gflops = sec["summary"]["gflops_per_clip"]
    for r in sec["rows"]:
        assert r["ms"] > 0 and r["clips_s"] == pytest.approx(r["batch"] / (r["ms"] / 1e3), rel=1e-3)
        flop = gflops[r["model"]][r["net"]] * 1e9 * r["batch"]
        assert r["tflops"] == pytest.approx(flop / (r["ms"] / 1e3) / 1e12, abs=1e-4)
    # P3D has temporal convs the 2D net lacks: more FLOPs on the same schedule
    assert gflops["p3d63"]["p3d"] > gflops["p3d63"]["2d"]
    assert any("port formulation checked equal" in n for n in sec["notes"])
    comps = sec["summary"]["comparisons"]
    assert len(comps) == 4 and all("conv3d_speedup_over_views" in c and "speedup_over_port" in c for c in comps)
    by = {(r["model"], r["net"], r["impl"], r["dtype"]): r["ms"] for r in sec["rows"]}
    c = next(c for c in comps if c["model"] == "p3d63" and c["dtype"] == "bf16")
    ratio = by[("p3d63", "p3d", "views", "bf16")] / by[("p3d63", "p3d", "conv3d", "bf16")]
    assert c["conv3d_speedup_over_views"] == pytest.approx(ratio, rel=1e-2)
    assert "conv3d_speedup_over_views" in md


def test_training_steps(tiny_run):
    results, _ = tiny_run
    got = rows(results, "train")
    assert len(got) == 2 * (4 * 2 + 2)  # models x ((bn, amp) x impls + port frozen/trainable)
    for r in got:
        assert r["ms"] > 0 and r["batch"] == 2 and r["peak_mib"] > 0
        if r["net"] == "p3d":
            assert r["loss_finite"], r  # calibrated BN statistics keep the random net finite, frozen or not
        assert ("grad_scale" in r) == (r["amp"] == "fp16")


def test_compile_and_decision(tiny_run):
    results, md = tiny_run
    comp = rows(results, "compile")
    assert {(r["model"], r["impl"]) for r in comp} == {("p3d63", i) for i in suite.IMPLS}  # tiny: one model
    assert all(r["compile_s"] > 0 and r["max_rel_err"] < 1e-2 for r in comp)
    d = results["decisions"]
    assert d["conv_impl"] in suite.IMPLS and d["configurations"] == 2 * 2 + 2 * 2 * 2  # forward + training pairs
    assert f"`{d['conv_impl']}`" in md


def test_decode_and_extraction(tiny_run):
    results, _ = tiny_run
    dec = rows(results, "decode")
    assert {r["codec"] for r in dec} == {"h264", "mpeg4"}
    assert all(r.get("frames_s_per_core", 1) > 0 and r.get("frames_s_wall", 1) > 0 for r in dec)
    assert any(r["how"].startswith("DataLoader") for r in dec)
    ext = rows(results, "extract")
    assert [r["workers"] for r in ext] == ["auto", 0, 1]
    sizes = results["sizes"]
    for r in ext:
        assert r["clips"] == r["videos"] * sizes["num_clips"]
        assert r["clips_s"] == pytest.approx(r["clips"] / r["seconds"], rel=1e-3)
        assert 0 <= r["loader_wait_share"] and 0 < r["forward_share"]
        assert r["forward_share"] + r["loader_wait_share"] <= 1.0 + 1e-6
        assert r["device_idle_share"] == pytest.approx(1 - r["forward_share"], abs=1e-3)
    auto = ext[0]
    assert "decoding worker(s)" in auto["plan"] and 1 <= auto["workers_used"] <= max(
        1, results["environment"]["cores"] - 1
    )
    assert ext[1]["workers_used"] == 0 and ext[2]["workers_used"] == 1


def test_flow_is_measured_or_skipped_with_a_note(tiny_run):
    results, _ = tiny_run
    sec = results["sections"]["flow"]
    try:
        import p3d.flow  # noqa: F401
    except ImportError:
        assert sec["summary"]["skipped"] and "p3d.flow" in sec["notes"][0]
    else:
        assert any(r.get("pairs_s", 0) > 0 for r in sec["rows"])


def test_a_failing_or_hanging_section_loses_nothing_else(tmp_path):
    """Sections run in child processes: a hang is killed after its budget with the rows it wrote kept, the next
    section still runs, and an exception is recorded with its message; the JSON is valid throughout."""
    out = tmp_path / "out"
    argv = ["--tiny", "--device", "cpu", "--sections", "decode,equal", "--out", str(out), "--work", str(tmp_path)]
    argv += ["--inject", "equal:fail", "--inject", "decode:hang", "--section-budget", "decode=8"]
    assert suite.main(argv) == 0
    res = json.loads((out / "gpu_suite.json").read_text())
    secs = res["sections"]
    assert secs["equal"]["status"] == "failed" and "injected failure" in secs["equal"]["error"]
    assert secs["equal"]["returncode"] == 0  # the child caught it and said so
    assert secs["decode"]["status"] == "timeout" and secs["decode"]["returncode"] is None
    assert secs["decode"]["rows"] == [{"what": "before the injected hang"}]
    assert list(secs) == ["decode", "equal"]  # the section after the hang ran
    md = (out / "gpu_suite.md").read_text()
    assert "## equal: failed" in md and "## decode: timeout" in md and "injected failure" in md


def test_sizes_follow_the_device_memory():
    gib = 2**30
    big = suite.Sizes.for_device(torch.device("cuda"), tiny=False, free_bytes=80 * gib)
    assert big.train_batch == {"p3d199": 32, "p3d63": 32} and big.batches == (32, 8, 1)
    # 8 GiB: half of it over 694 MiB per P3D-199 clip = 5.9 -> 4; over 410 MiB per P3D-63 clip = 9.99 -> 8
    small = suite.Sizes.for_device(torch.device("cuda"), tiny=False, free_bytes=8 * gib)
    assert small.train_batch == {"p3d199": 4, "p3d63": 8}
    assert suite.train_batch_for(100 * 2**20, 694) == 1  # never 0
    tiny = suite.Sizes.for_device(torch.device("cpu"), tiny=True)
    assert tiny.layers == (1, 1, 1, 1) and tiny.clip_len == 16


def test_conv_impl_decision_follows_the_times():
    def f(model, impl, ms, batch=8):
        return {"model": model, "net": "p3d", "impl": impl, "dtype": "bf16", "batch": batch, "ms": ms}

    faster_conv3d = [f("a", "views", 10.0), f("a", "conv3d", 5.0), f("b", "views", 4.0), f("b", "conv3d", 4.0)]
    d = suite.conv_impl_decision(faster_conv3d, [])
    assert d["conv_impl"] == "conv3d" and d["conv3d_time_over_views_geomean"] == pytest.approx(0.5**0.5, abs=1e-3)
    train = [{"model": "a", "net": "p3d", "bn": "frozen", "amp": "bf16", "impl": i, "ms": t} for i, t in
             (("views", 1.0), ("conv3d", 8.0))]  # fmt: skip
    assert suite.conv_impl_decision(faster_conv3d, train)["conv_impl"] == "views"  # (0.5 * 1 * 8)^(1/3) > 1
    assert suite.conv_impl_decision([f("a", "views", 1.0)], [])["conv_impl"] is None


def test_sigterm_stops_the_running_section_and_keeps_the_results(tmp_path):
    """``timeout`` sends SIGTERM: the section's child (its own session, so a plain kill of the suite would leave it
    holding the GPU) is killed and the JSON records the interruption."""
    import subprocess
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--tiny", "--device", "cpu", "--sections",
           "decode,flow", "--inject", "decode:hang", "--section-budget", "decode=120", "--out", str(out),
           "--work", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    partial = tmp_path / "partial-decode.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "before the injected hang" not in (
        partial.read_text() if partial.exists() else ""
    ):
        time.sleep(0.2)
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    res = json.loads((out / "gpu_suite.json").read_text())
    assert res["sections"]["decode"]["status"] == "interrupted"
    assert res["sections"]["decode"]["rows"] == [{"what": "before the injected hang"}]
    assert "flow" not in res["sections"]  # nothing started after the signal
