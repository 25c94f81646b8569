"""Inference-time folding of BatchNorm into the preceding convolution.

In evaluation mode ``bn(conv(x)) = conv'(x)`` with ``w' = w·γ/√(σ²+ε)`` (per output channel) and
``b' = β − μ·γ/√(σ²+ε)``: one pass over the activations fewer per conv, and a graph that ``torch.compile`` (or
oneDNN) turns into conv + bias + ReLU kernels.  The folded model computes the eval-mode function of the original
(up to float rounding); it is for inference only — its BatchNorms are gone, so it cannot be trained as the
original would.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from p3d.models.blocks import Bottleneck
from p3d.models.layers import bn_scale_shift
from p3d.models.resnet import P3DResNet

__all__ = ["fold_bn", "fuse_for_inference"]


@torch.no_grad()
def fold_bn(conv: nn.Conv3d, bn: nn.BatchNorm3d) -> None:
    """Fold ``bn``'s running statistics and affine parameters into ``conv`` in place (``conv`` gains a bias).

    ``conv`` is any ``nn.Conv3d`` (the p3d convs subclass it); the kernel keeps its memory layout."""
    if conv.out_channels != bn.num_features:
        raise ValueError(f"cannot fold a {bn.num_features}-channel BatchNorm into a {conv.out_channels}-channel conv")
    scale, shift = bn_scale_shift(bn)
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    layout = torch.channels_last_3d if conv.weight.is_contiguous(memory_format=torch.channels_last_3d) else None
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1))).to(conv.weight.dtype)
    if layout is not None:
        weight = weight.contiguous(memory_format=layout)
    conv.weight = nn.Parameter(weight, requires_grad=False)
    conv.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)


def _pairs(module: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(owner, conv_attr, bn_attr)`` of every conv→BN pair directly owned by ``module``."""
    if isinstance(module, P3DResNet):
        return [(module, "conv1", "bn1")]
    if isinstance(module, Bottleneck):
        names = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]
        if module.temporal:
            names.append(("conv_t", "bn_t"))
        pairs = [(module, c, b) for c, b in names]
        if module.downsample is not None:
            pairs.append((module.downsample, "0", "1"))
        return pairs
    return []


def fuse_for_inference(model: P3DResNet) -> P3DResNet:
    """A copy of ``model`` in eval mode with every BatchNorm folded into its conv (replaced by ``nn.Identity``).

    Input/output as ``model``: ``(N, C, T, H, W)`` → logits; ``forward_layers`` and ``forward_features`` work
    too.  The original is left untouched.  Use with ``torch.no_grad()`` / ``torch.inference_mode()``, optionally
    under ``torch.autocast("cpu", torch.bfloat16)`` and/or ``torch.compile``.
    """
    if not isinstance(model, P3DResNet):
        raise TypeError(f"fuse_for_inference expects a P3DResNet, got {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    for m in list(fused.modules()):
        for owner, c, b in _pairs(m):
            conv, bn = getattr(owner, c), getattr(owner, b)
            if isinstance(bn, nn.Identity):
                continue
            fold_bn(conv, bn)
            setattr(owner, b, nn.Identity())
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused
