"""One description of what a model is and expects: :class:`PretrainedCfg` (timm's ``pretrained_cfg``).

The same object describes

* every model built by :func:`p3d.create_model` (``model.pretrained_cfg``; ``model.input_spec`` is its ``input``),
* every released model (the pretrained tags of :mod:`p3d.models.pretrained`),
* every weight file p3d writes (the JSON in a ``.safetensors`` header and its sidecar, a training checkpoint, the
  ONNX/TorchScript metadata, a feature store's provenance),

so preprocessing, class count and class names travel with the weights and cannot drift: there is one copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from p3d.spec import InputSpec

__all__ = ["PretrainedCfg", "ConfiguredModel"]


def _plain(v: Any) -> Any:
    """JSON-friendly copy: tuples become lists (recursively)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


@dataclass(frozen=True)
class PretrainedCfg:
    """What a model is, what it expects at its input, and where its weights came from.

    Attributes:
        architecture: registry name (``p3d199``, ``resnet50_2d``, ``c3d``), or the class name of a model built
            without the registry.
        options: constructor options that rebuild it (``layers``, ``pattern``, ``width``, ``style``,
            ``in_channels``, ``num_classes``, ``dropout`` …), JSON values.
        input: the preprocessing its weights expect (:class:`~p3d.spec.InputSpec`).
        classifier, first_conv: parameter-name prefixes of the classifier and the first convolution (what a new
            class count or a new input modality replaces).
        class_names: the classes its outputs mean, when known (a trained run, a labelled release).
        tag: the pretrained tag the weights are (``p3d199.kinetics400_rgb``), if any.
        source: where the weights came from, in words or as a URL.
        file, sha256: the weight file loaded into the model and its checksum (for a tag: the expected checksum).
        description, prototxt: for the release table.
        extra: anything else worth keeping with the weights (conversion or training provenance), JSON values.
    """

    architecture: str
    options: Mapping[str, Any] = field(default_factory=dict)
    input: InputSpec = field(default_factory=InputSpec)
    classifier: str = "fc"
    first_conv: str = "conv1"
    class_names: tuple[str, ...] | None = None
    tag: str | None = None
    source: str = ""
    file: str | None = None
    sha256: str | None = None
    description: str = ""
    prototxt: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _plain(dict(self.options)))
        object.__setattr__(self, "extra", _plain(dict(self.extra)))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        n = self.num_classes
        if self.class_names is not None and n and len(self.class_names) != n:
            raise ValueError(f"{len(self.class_names)} class names for a {n}-way classifier ({self.architecture})")

    @property
    def num_classes(self) -> int:
        return int(self.options.get("num_classes", 0) or 0)

    @property
    def in_channels(self) -> int:
        return int(self.options.get("in_channels", self.input.channels))

    def replace(self, **changes: Any) -> PretrainedCfg:
        """A copy with ``changes``; ``options=`` replaces the options, ``option_changes=`` updates some."""
        opts = changes.pop("option_changes", None)
        if opts:
            changes["options"] = {**self.options, **opts}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["input"] = self.input.to_dict()
        d["class_names"] = list(self.class_names) if self.class_names is not None else None
        return _plain(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> PretrainedCfg:
        """Read :meth:`to_dict`'s output; unknown keys are an error naming ``where``."""
        if not isinstance(d, Mapping) or "architecture" not in d:
            raise ValueError(f"{where}: not a model config (no 'architecture')")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{where}: unknown model-config keys {unknown}")
        kw = dict(d)
        try:
            kw["input"] = InputSpec.from_dict(kw["input"]) if kw.get("input") else InputSpec()
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad input spec ({e})") from None
        return cls(**kw)


class ConfiguredModel:
    """Mixin of the registry's models: ``pretrained_cfg`` is the one description, and ``input_spec`` and
    ``num_classes`` read (and write) it, so no copy can go stale."""

    pretrained_cfg: PretrainedCfg

    @property
    def input_spec(self) -> InputSpec:
        return self.pretrained_cfg.input

    @input_spec.setter
    def input_spec(self, spec: InputSpec) -> None:
        if not isinstance(spec, InputSpec):
            raise TypeError(f"input_spec must be an InputSpec, got {type(spec).__name__}")
        have = self.pretrained_cfg.in_channels
        if spec.channels != have:
            raise ValueError(f"input spec for {spec.channels} channels, the model takes {have}")
        self.pretrained_cfg = self.pretrained_cfg.replace(input=spec)

    @property
    def num_classes(self) -> int:
        return self.pretrained_cfg.num_classes
