"""Loading a model for testing or prediction: a ``p3d train`` checkpoint, or registry name + pretrained weights."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from p3d.engine.checkpoint import is_train_checkpoint

__all__ = ["load_for_inference"]


def load_for_inference(
    weights: str | Path, model_name: str | None = None, num_classes: int | None = None
) -> tuple[nn.Module, list[str] | None, dict | None]:
    """``(model in eval mode, class names or None, training state or None)``.

    ``weights`` is a ``p3d train`` checkpoint (the model is rebuilt from its saved configuration), or — with
    ``model_name`` — a pretrained tag or converted ``.safetensors`` for ``create_model(model_name, ...)``.
    """
    from p3d.engine.trainer import model_from_checkpoint

    if is_train_checkpoint(weights):
        return model_from_checkpoint(weights)
    if model_name is None:
        p = Path(weights)
        if not p.exists() and "." not in str(weights):
            raise ValueError(f"{weights}: not a file; a pretrained tag needs --model NAME")
        if p.suffix == ".safetensors":
            from p3d.models.pretrained import read_metadata

            meta = read_metadata(p)
            if meta is None:
                raise ValueError(f"{p}: no embedded architecture; give --model NAME")
            model_name = meta["architecture"]
        else:
            raise ValueError(f"{weights}: not a p3d train checkpoint; give --model NAME for other weight files")
    from p3d.models import create_model
    from p3d.models.pretrained import pretrained_options

    opts = pretrained_options(weights, model_name)
    if num_classes is not None and "num_classes" not in opts:
        opts["num_classes"] = num_classes
    model = create_model(model_name, pretrained=str(weights), **opts)
    model.eval()
    return model, None, None
