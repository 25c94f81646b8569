"""Training, video-level testing, checkpoints and distributed helpers (the paper's protocol, Sec. 4.1).

Public API::

    load_config(path=None, overrides=["optim.lr=0.01", ...]) -> TrainConfig     # p3d.engine.config
    Trainer(cfg, resume=False).fit() -> TrainResult                              # p3d.engine.trainer
    evaluate_videos(model, samples, num_clips=20) -> EvalResult; .metrics()      # p3d.engine.evaluate
    iter_video_outputs(videos, forward, batch_size=...); autocast(device, amp)  # p3d.engine.inference
    save_checkpoint / load_checkpoint / latest_checkpoint                        # p3d.engine.checkpoint
    init_distributed(); ShardedSampler                                           # p3d.engine.distributed
    check_memory(estimate_inference(model, batch_size=8, num_clips=20))         # p3d.engine.memory
"""

from p3d.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from p3d.engine.config import DEMO_OVERRIDES, TrainConfig, apply_overrides, load_config, save_config
from p3d.engine.distributed import DistInfo, ShardedSampler, init_distributed
from p3d.engine.evaluate import EvalResult, evaluate_videos, write_predictions
from p3d.engine.inference import autocast, iter_video_outputs
from p3d.engine.trainer import DivergenceError, Trainer, TrainResult, build_model

__all__ = [
    "DEMO_OVERRIDES",
    "DistInfo",
    "DivergenceError",
    "EvalResult",
    "ShardedSampler",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "apply_overrides",
    "build_model",
    "evaluate_videos",
    "autocast",
    "iter_video_outputs",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "save_checkpoint",
    "save_config",
    "write_predictions",
]
