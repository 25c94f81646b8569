"""Tiny synthetic data and configurations shared by the engine tests (a few seconds each on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p3d.engine.config import TrainConfig


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 motion classes × 5 videos of 16 frames at 48×48 (train 3+…, test 2 per class: 6 test videos)."""
    from p3d.data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(
        root, num_classes=3, videos_per_class=5, num_frames=16, size=(48, 48), test_fraction=0.3, seed=0
    )


# two training videos of tiny_data replaced by junk (as a damaged download would be): unreadable, skipped
BROKEN = ("MoveLeft/v_MoveLeft_g03_c01.mp4", "RotateCW/v_RotateCW_g05_c01.mp4")


@pytest.fixture(scope="session")
def broken_data(tiny_data, tmp_path_factory) -> Path:
    """tiny_data with the training videos :data:`BROKEN` unreadable."""
    import shutil

    root = tmp_path_factory.mktemp("broken") / "synth"
    shutil.copytree(tiny_data, root)
    for rel in BROKEN:
        (root / "UCF-101" / rel).write_bytes(b"not a video at all" * 10)
    return root


def tiny_config(data_root: Path, out: Path, **sections) -> TrainConfig:
    cfg = TrainConfig()
    base = {
        "model": {"name": "p3d63", "width": 4, "layers": [1, 1, 1, 1], "dropout": 0.5, "freeze_bn": True},
        "data": {
            "root": str(data_root),
            "clip_len": 8,
            "size": [32, 32],
            "resize": [40, 40],
            "num_workers": 0,
            "flip": True,
            "val_clips": 2,
        },
        "optim": {"lr": 0.05, "lr_step": 3, "iterations": 6, "batch_size": 2, "accum_steps": 3},
        "run": {
            "out_dir": str(out),
            "val_every": 0,
            "ckpt_every": 0,
            "log_every": 1,
            "progress": False,
            "tensorboard": False,
        },
    }
    cfg.update(base, "tiny")
    cfg.update(sections, "test")
    cfg.validate()
    return cfg


def write_yaml(cfg: TrainConfig, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path
