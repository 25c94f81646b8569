"""Model registry: ``create_model(name, **options)`` and ``list_models()``, in timm's vocabulary.

Every model carries ``pretrained_cfg`` (:class:`~p3d.models.config.PretrainedCfg`: its registry name, the options
that rebuild it, the preprocessing its weights expect, its classes and where its weights came from);
``model.input_spec`` is that config's ``input``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from p3d.models.c3d import C3D
from p3d.models.resnet import STAGE_DEPTHS, P3DResNet

__all__ = ["create_model", "list_models", "model_info", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}


def _register(name: str, builder: Callable[..., nn.Module], description: str, **defaults: Any) -> None:
    _REGISTRY[name] = ModelEntry(name, builder, defaults, description)


for _depth, _p3d in ((50, 63), (101, 131), (152, 199)):
    _register(
        f"p3d{_p3d}",
        P3DResNet,
        f"P3D ResNet on ResNet-{_depth}: res2-res4 units cycle P3D-A/B/C, res5 2D ({_p3d} layers)",
        layers=STAGE_DEPTHS[_depth],
        pattern="ABC",
    )
    _register(
        f"resnet{_depth}_2d",
        P3DResNet,
        f"frame-level 2D ResNet-{_depth}: each frame scored by a 2D ResNet, scores averaged over the clip",
        layers=STAGE_DEPTHS[_depth],
        pattern="S",
        temporal_pool=False,
    )
_register("c3d", C3D, "C3D (Tran et al. 2015): 8 3×3×3 convs, 5 max-pools, fc6/fc7; 16×112×112 input")


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob ``pattern``, sorted."""
    from fnmatch import fnmatch

    return sorted(n for n in _REGISTRY if fnmatch(n, pattern))


def model_info(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


def _check_option(name: str, key: str, value: Any, default: Any) -> None:
    """An option must have its default's type (ints are not bools, sequences hold ints): one clear line if not."""
    if default is None or default is inspect.Parameter.empty:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        return
    if not ok:
        kind = "list of int" if isinstance(default, (tuple, list)) else type(default).__name__
        raise ValueError(f"model {name!r}: option {key}={value!r}: expected {kind}")


def create_model(name: str, pretrained: str | None = None, **options: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :func:`list_models` (``p3d63``, ``p3d131``, ``p3d199``, ``resnet50_2d``, ``c3d``, …).
        pretrained: weights in any form :func:`p3d.models.resolve.resolve_weights` accepts (a tag, a converted or
            trained ``.safetensors``, a ``p3d train`` checkpoint or run folder, a port checkpoint); the model is
            built with the options they record, which explicit ``options`` may not contradict (except
            ``num_classes``: a fresh classifier, and ``dropout``).
        options: constructor options overriding the registry's defaults, e.g. ``num_classes=101``,
            ``in_channels=2``, ``dropout=0.9``, ``pattern="A"``, ``style="pytorch"``, ``width=8``,
            ``layers=(1, 1, 1, 1)`` (P3D/ResNet), ``width``/``fc_width`` (C3D).  Unknown options are an error.
    Returns:
        the model, with ``model.pretrained_cfg`` (:class:`~p3d.models.config.PretrainedCfg`) describing it.
    """
    entry = model_info(name)
    params = inspect.signature(entry.builder).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = ", ".join(p for p in params if p != "self")
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options: {valid}")
    for key, value in options.items():
        _check_option(name, key, value, params[key].default)
    if pretrained is not None:
        from p3d.models.resolve import load_model

        return load_model(pretrained, name, **options)
    kwargs = {**entry.defaults, **options}
    model = entry.builder(**kwargs)
    built = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k != "input_spec"}
    model.pretrained_cfg = model.pretrained_cfg.replace(architecture=name, option_changes=built)
    return model
