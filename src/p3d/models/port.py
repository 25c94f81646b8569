"""The state-dict layout of the widely used PyTorch port of P3D (qijiezhao/pseudo-3d-pytorch, ``p3d_model.py``).

The port's ``p3d_rgb_199.checkpoint.pth.tar`` / ``p3d_flow_199.checkpoint.pth.tar`` hold the authors' weights
under the port's own names (``{'state_dict': …}``):

=================================  =========================================  ==============================
port key                           p3d parameter                              Caffe layer
=================================  =========================================  ==============================
``conv1_custom``                   ``conv1``                                  ``conv1``
``bn1``                            ``bn1``                                    ``bn_conv1``
``layerN.M.conv1`` / ``bn1``       ``layerN.M.conv1`` / ``bn1``               ``*_branch2a``
``layerN.M.conv2`` / ``bn2``       ``layerN.M.conv2`` / ``bn2`` (S)           ``*_branch2b`` (N ≤ 3)
``layerN.M.conv3`` / ``bn3``       ``layerN.M.conv_t`` / ``bn_t`` (T)         ``*_branch2b_t`` (N ≤ 3)
``layer4.M.conv_normal`` / ``bn_normal``  ``layer4.M.conv2`` / ``bn2``        ``res5*_branch2b``
``layerN.M.conv4`` / ``bn4``       ``layerN.M.conv3`` / ``bn3``               ``*_branch2c``
``layerN.0.downsample.0`` / ``.1``  ``layerN.0.downsample.0`` / ``.1``        ``*_branch1``
``fc``                             ``fc``                                     ``fc_*``
=================================  =========================================  ==============================

res5 (``layer4``) is ``Conv2d``/``BatchNorm2d`` in the port: its 4D kernels get a unit time axis.  Only the names
and shapes are taken from the port; the p3d model computes the authors' semantics, where the port's forward
differs (it rectifies T before the sum in P3D-B and P3D-C, sums instead of averaging in P3D-C, and pads pool1).
The block types cannot be read from the weights (A, B and C have identical shapes), so the weights do not fix the
``pattern``: the port's default ``ABC`` cycle is the registry's default.

The weight resolver (:mod:`p3d.models.resolve`) recognises this layout (:func:`is_port_layout`) and maps it with
:func:`port_to_p3d`; :mod:`p3d.convert.port` writes converted files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from p3d.errors import WeightLoadError

__all__ = ["is_port_layout", "p3d_key_to_port", "p3d_to_port", "port_to_p3d", "port_architecture"]

_UNIT_KEY = re.compile(r"layer([1-4])\.(\d+)\.(.+)")


def p3d_key_to_port(key: str) -> str:
    """The port's name for a p3d state-dict key (see the module table)."""
    if key.startswith("conv1."):
        return "conv1_custom." + key[len("conv1.") :]
    m = _UNIT_KEY.fullmatch(key)
    if m is None:
        return key  # bn1.*, fc.*
    stage, idx, rest = m.groups()
    module, _, attr = rest.partition(".")
    if module.startswith("downsample"):
        return key
    if stage == "4":
        ren = {
            "conv1": "conv1",
            "bn1": "bn1",
            "conv2": "conv_normal",
            "bn2": "bn_normal",
            "conv3": "conv4",
            "bn3": "bn4",
        }
    else:
        ren = {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2", "conv_t": "conv3", "bn_t": "bn3"}
        ren.update({"conv3": "conv4", "bn3": "bn4"})
    if module not in ren:
        raise KeyError(f"no port name for {key!r}")
    return f"layer{stage}.{idx}.{ren[module]}.{attr}"


def _is_2d_in_port(key: str) -> bool:
    return key.startswith("layer4.") and key.endswith(".weight") and (".conv" in key or "downsample.0" in key)


def p3d_to_port(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A p3d state dict in the port's layout (res5 kernels 4D): the inverse of :func:`port_to_p3d`."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        if _is_2d_in_port(key) and value.dim() == 5:
            value = value.squeeze(2)
        out[p3d_key_to_port(key)] = value.clone()
    return out


def is_port_layout(sd: Mapping[str, Tensor]) -> bool:
    """Whether a state dict uses the port's names (its stem is ``conv1_custom``)."""
    return "conv1_custom.weight" in sd


def port_architecture(sd: Mapping[str, Tensor], source: str = "<state dict>") -> dict[str, object]:
    """P3DResNet options of a port state dict: stage depths, width, input channels and classes."""
    if "conv1_custom.weight" not in sd:
        raise WeightLoadError(
            f"{source}: not a checkpoint of the PyTorch port (no 'conv1_custom.weight'); first keys: {list(sd)[:5]}"
        )
    depths = []
    for stage in range(1, 5):
        idx = {int(m.group(2)) for k in sd if (m := _UNIT_KEY.fullmatch(k)) and m.group(1) == str(stage)}
        if not idx or idx != set(range(len(idx))):
            raise WeightLoadError(f"{source}: layer{stage} units are {sorted(idx)}; expected 0..n-1")
        depths.append(len(idx))
    w = sd["conv1_custom.weight"]
    fc = sd.get("fc.weight")
    return {
        "layers": depths,
        "width": int(w.shape[0]),
        "in_channels": int(w.shape[1]),
        "num_classes": int(fc.shape[0]) if fc is not None else 0,
    }


def port_to_p3d(sd: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a port state dict into ``model``'s keys, giving res5's 2D kernels a unit time axis.

    ``target`` is the model's state dict (names and shapes).  Keys without a p3d counterpart are kept under their
    port name (they then show up as unexpected).
    """
    to_port = {p3d_key_to_port(k): k for k in target}
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        p = to_port.get(key)
        if p is None:
            out[key] = value
            continue
        want = target[p]
        if value.dim() == 4 and want.dim() == 5 and want.shape[2] == 1:
            value = value.unsqueeze(2)
        out[p] = value
    return out
