"""Convert checkpoints of the widely used PyTorch port (qijiezhao/pseudo-3d-pytorch) into p3d models.

The port's layout (names, 4D res5 kernels) is described and mapped in :mod:`p3d.models.port`, so every command
reads port checkpoints directly; this module is what ``p3d convert`` calls to write them as self-describing
``.safetensors``.  Files are read with ``torch.load(weights_only=True)``: a pickle that needs anything beyond
tensors and plain containers is refused with a clear message, never executed.
"""

from __future__ import annotations

from pathlib import Path

from p3d.models.port import p3d_key_to_port, p3d_to_port, port_architecture, port_to_p3d
from p3d.models.resnet import P3DResNet
from p3d.models.weights import LoadReport

__all__ = ["p3d_key_to_port", "p3d_to_port", "port_to_p3d", "port_architecture", "convert_port"]


def convert_port(
    path: str | Path,
    pattern: str = "ABC",
    dropout: float = 0.5,
    strict: bool = True,
) -> tuple[P3DResNet, LoadReport]:
    """Read a port checkpoint (``.pth.tar``/``.pth``, ``weights_only=True``) into a new :class:`P3DResNet`.

    The architecture comes from the weights (:func:`port_architecture`); the model carries the authors'
    preprocessing (the port's weights are the converted Caffe ones: BGR minus (104, 117, 123), or flow minus
    128), is in eval mode, and has its provenance in ``pretrained_cfg``.  Every key is accounted for in the
    returned report; with ``strict`` anything missing, unexpected or mis-shaped is an error.
    """
    from p3d.errors import WeightLoadError
    from p3d.models.registry import create_model
    from p3d.models.resolve import load_weights, resolve_weights

    weights = resolve_weights(path)
    if weights.kind != "port" or weights.cfg is None:
        raise WeightLoadError(f"{path}: not a checkpoint of the PyTorch port (no 'conv1_custom.weight')")
    model = create_model(weights.cfg.architecture, **{**weights.cfg.options, "pattern": pattern, "dropout": dropout})
    report = load_weights(model, weights, strict=strict)
    model.pretrained_cfg = model.pretrained_cfg.replace(extra={"format": "pytorch-port", "file": Path(path).name})
    return model.eval(), report
