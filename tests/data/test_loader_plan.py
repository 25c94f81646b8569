"""Sizing the decoding pool from measured rates (issue 13): worker count and prefetch depth from the model's and one
worker's rate, capped by the cores and by the shared memory the queue may fill; the decode probe."""

from __future__ import annotations

import math

import pytest

from p3d.data import LoaderPlan, VideoClipsDataset, build_samples, make_synthetic_dataset, plan_loader
from p3d.data.datasets import Sample
from p3d.data.loader import probe_decode_rate
from p3d.spec import InputSpec

MiB = 2**20


def test_workers_outpace_the_model():
    # model 100 videos/s, one worker decodes 12 videos/s: 1.25 * 100 / 12 = 10.4 -> 11 workers
    plan = plan_loader(100.0, 12.0, cores=16, items_per_batch=1.6)
    assert plan.workers == 11 and plan.limit == "rate"
    assert plan.decode_capacity == pytest.approx(132.0)
    # without headroom exactly ceil(model / decode); an exact multiple does not round up
    assert plan_loader(100.0, 12.0, cores=16, headroom=1.0).workers == 9
    assert plan_loader(100.0, 25.0, cores=16, headroom=1.0).workers == 4


def test_a_fast_decoder_or_a_slow_model_needs_one_worker():
    assert plan_loader(2.0, 50.0, cores=16).workers == 1
    assert plan_loader(2.0, 50.0, cores=1).workers == 1  # never 0: the main process keeps launching the model


def test_capped_by_the_cores_but_the_main_process():
    plan = plan_loader(1000.0, 10.0, cores=16)
    assert (plan.workers, plan.limit) == (15, "cores")
    assert plan_loader(1000.0, 10.0, cores=16, reserve=2).workers == 14


def test_prefetch_keeps_batches_ahead():
    # 32-clip batches of 20-clip videos = 1.6 videos per batch; 2 batches ahead over 1 worker -> 4 per worker
    assert plan_loader(5.0, 10.0, cores=8, items_per_batch=1.6).prefetch_factor == math.ceil(2 * 1.6)
    # many workers: the minimum of 2 per worker
    assert plan_loader(100.0, 10.0, cores=16, items_per_batch=1.6).prefetch_factor == 2
    assert plan_loader(5.0, 10.0, cores=8, items_per_batch=8, batches_ahead=3).prefetch_factor == 24


def test_shared_memory_bounds_the_queue():
    # 13 workers x 2 items of 25 MiB = 650 MiB > a 300 MiB budget: 12 items fit -> 12 workers x 1
    plan = plan_loader(100.0, 10.0, cores=16, item_bytes=25 * MiB, memory_budget=300 * MiB)
    assert (plan.workers, plan.prefetch_factor, plan.limit) == (12, 1, "memory")
    # room for every worker but not for the full depth: the depth shrinks, the workers stay
    plan = plan_loader(20.0, 10.0, cores=16, items_per_batch=8, item_bytes=MiB, memory_budget=10 * MiB)
    assert (plan.workers, plan.prefetch_factor, plan.limit) == (3, 3, "rate")
    # an item larger than the whole budget still gets one worker holding one item
    plan = plan_loader(100.0, 10.0, cores=16, item_bytes=50 * MiB, memory_budget=10 * MiB)
    assert (plan.workers, plan.prefetch_factor) == (1, 1)
    # ample memory changes nothing
    assert plan_loader(100.0, 10.0, cores=16, item_bytes=MiB, memory_budget=2**40).workers == 13


def test_default_budget_reads_the_shared_memory(monkeypatch):
    import p3d.data.loader as loader

    monkeypatch.setattr(loader, "shared_memory_free", lambda path="/dev/shm": 64 * MiB)  # a container's default
    plan = plan_loader(100.0, 10.0, cores=16, item_bytes=25 * MiB)  # half of 64 MiB = 1 item
    assert (plan.workers, plan.prefetch_factor, plan.limit) == (1, 1, "memory")


@pytest.mark.parametrize(
    "kw", [{"model_rate": 0.0}, {"decode_rate": -1.0}, {"model_rate": float("inf")}, {"items_per_batch": 0}]
)
def test_bad_rates_are_refused(kw):
    args = {"model_rate": 10.0, "decode_rate": 5.0, **kw}
    with pytest.raises(ValueError, match="plan_loader"):
        plan_loader(args.pop("model_rate"), args.pop("decode_rate"), **args)


def test_plan_describes_itself():
    plan = LoaderPlan(4, 2, 10.0, 3.0, "rate")
    assert plan.as_dict()["decode_capacity"] == 12.0
    assert "4 decoding worker(s), prefetch 2" in plan.describe()


def test_probe_times_real_decoding(tmp_path):
    make_synthetic_dataset(tmp_path, num_classes=1, videos_per_class=3, num_frames=16, size=(48, 64), seed=0)
    samples = build_samples("ucf101", tmp_path, split=1, subset="train")
    spec = InputSpec(clip_len=8, size=(32, 32), resize=(36, 48))
    ds = VideoClipsDataset(samples, spec, num_clips=2, raw=True)
    rate = probe_decode_rate(ds, max_items=2)
    assert 0 < rate < 1e4  # items/s of real decoding: finite and positive
    bad = VideoClipsDataset([Sample(str(tmp_path / "missing.mp4"), (0,), "missing")], spec, num_clips=2, raw=True)
    with pytest.raises(ValueError, match="no readable item"):
        probe_decode_rate(bad)
    with pytest.raises(ValueError, match="non-empty"):
        probe_decode_rate(VideoClipsDataset([], spec, raw=True))
