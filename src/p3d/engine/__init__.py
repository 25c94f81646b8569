"""Training, video-level testing, checkpoints and distributed helpers (the paper's protocol, Sec. 4.1).

Public API::

    load_config(path=None, overrides=["optim.lr=0.01", ...]) -> TrainConfig     # p3d.engine.config
    Trainer(cfg, resume=False).fit() -> TrainResult                              # p3d.engine.trainer
    evaluate(model, samples, num_clips=20) -> EvalResult; EvalResult.metrics()   # p3d.engine.evaluate
    model_from_checkpoint(path) -> (model, classes, state)
    save_checkpoint / load_checkpoint / latest_checkpoint                        # p3d.engine.checkpoint
    init_distributed(); ShardedSampler                                           # p3d.engine.distributed
"""

from p3d.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from p3d.engine.config import DEMO_OVERRIDES, TrainConfig, apply_overrides, load_config, save_config
from p3d.engine.distributed import DistInfo, ShardedSampler, init_distributed
from p3d.engine.evaluate import EvalResult, evaluate, plot_confusion, write_predictions
from p3d.engine.trainer import DivergenceError, Trainer, TrainResult, build_model, model_from_checkpoint

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
    "evaluate",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "load_config",
    "model_from_checkpoint",
    "plot_confusion",
    "save_checkpoint",
    "save_config",
    "write_predictions",
]
