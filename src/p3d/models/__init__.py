"""Models: the P3D blocks and trunk, the frame-level 2D ResNet and C3D baselines, the registry, 2D→P3D init.

Importing this package tunes glibc malloc for the models' large activations (:func:`p3d.malloc.tune`).
"""

from p3d import malloc as _malloc
from p3d.models.blocks import P3DA, P3DB, P3DC, Bottleneck, Bottleneck2D, SpatialConv, TemporalConv
from p3d.models.c3d import C3D
from p3d.models.config import PretrainedCfg
from p3d.models.fuse import fold_bn, fuse_for_inference
from p3d.models.registry import create_model, list_models, model_info
from p3d.models.resnet import STAGE_DEPTHS, P3DResNet, clip_len_ok, count_layers, init_temporal
from p3d.models.resolve import Weights, load_model, load_weights, resolve_weights
from p3d.models.summary import ModelSummary, count_flops, summarize
from p3d.models.weights import LoadReport, load_2d_resnet, read_state_dict

__all__ = [
    "P3DA",
    "P3DB",
    "P3DC",
    "Bottleneck",
    "Bottleneck2D",
    "SpatialConv",
    "TemporalConv",
    "C3D",
    "P3DResNet",
    "STAGE_DEPTHS",
    "clip_len_ok",
    "count_layers",
    "init_temporal",
    "create_model",
    "load_model",
    "load_weights",
    "resolve_weights",
    "Weights",
    "PretrainedCfg",
    "list_models",
    "model_info",
    "ModelSummary",
    "count_flops",
    "fold_bn",
    "fuse_for_inference",
    "summarize",
    "LoadReport",
    "load_2d_resnet",
    "read_state_dict",
]

_malloc.tune()
