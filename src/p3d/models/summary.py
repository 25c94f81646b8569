"""Model size and cost: parameters, MiB, FLOPs, layer count (``p3d summary``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from p3d.models.resnet import count_layers

__all__ = ["ModelSummary", "summarize", "count_flops"]


@dataclass(frozen=True)
class ModelSummary:
    name: str
    params: int  # learnable parameters
    buffers: int  # BN running statistics etc.
    size_mib: float  # parameters + buffers, MiB (2**20 bytes)
    macs: int  # multiply-accumulates of one forward pass for `input_shape`
    layers: int  # weighted layers along the main path (P3D-199 → 199)
    input_shape: tuple[int, ...]

    @property
    def flops(self) -> int:
        """FLOPs counted as 2 × MACs (one multiply and one add), the convention of fvcore/PyTorch."""
        return 2 * self.macs

    def __str__(self) -> str:
        return "\n".join(
            [
                f"model         {self.name}",
                f"input         {'×'.join(map(str, self.input_shape))} (N, C, T, H, W)",
                f"parameters    {self.params:,} learnable ({self.buffers:,} buffer values)",
                f"size          {self.size_mib:.1f} MiB (parameters + buffers)",
                f"MACs          {self.macs / 1e9:.2f} G multiply-adds per clip",
                f"FLOPs         {self.flops / 1e9:.2f} G (= 2 × MACs)",
                f"layers        {self.layers} (weighted layers on the main path, shortcut projections excluded)",
            ]
        )


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 × MACs) of ``model(x)`` by PyTorch's operator-level counter (convs and matmuls)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def summarize(model: nn.Module, name: str = "", input_shape: tuple[int, ...] | None = None) -> ModelSummary:
    """Summary of ``model`` for one clip of ``input_shape`` (default: the model's ``input_spec``)."""
    if input_shape is None:
        spec = model.input_spec
        input_shape = (1, spec.channels, spec.clip_len, *spec.size)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    size_mib = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())) / 2**20
    flops = count_flops(model, torch.zeros(input_shape))
    return ModelSummary(
        name, params, buffers, size_mib, flops // 2 // input_shape[0], count_layers(model), tuple(input_shape)
    )
