"""Export a model to ONNX, TorchScript or a ``torch.export`` program, each with a parity check.

**ONNX** goes through PyTorch's ``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, which
needs ``onnxscript``: ``pip install 'p3d[export]'``).  The TorchScript-based exporter cannot be used: it rejects
the ``contiguous(memory_format=torch.channels_last_3d)`` the trunk runs in.  The default opset is **18**, the
exporter's native opset (lower ones go through ONNX's version converter); every operator of the graph — Conv,
BatchNormalization, MaxPool, ReduceMax, ReduceMean, Reshape, Transpose, Relu, Gemm — is standard since early
opsets, and onnxruntime ≥ 1.17 runs opset 18.  The batch dimension is dynamic; the clip length and frame size are
fixed at export (the temporal pooling schedule depends on T).  The model's preprocessing (its
:class:`~p3d.spec.InputSpec`) and ``pretrained_cfg`` travel in the ONNX ``metadata_props``.

**Parity.**  After export, the same seeded random clip(s) run through PyTorch and the exported artefact
(onnxruntime on CPU for ONNX) and the maximum absolute difference is reported; above ``atol`` it is an error.

**TorchScript** is a trace (``torch.jit.trace``): valid for the traced clip shape, batch included.
**torch.export** saves an ``ExportedProgram`` (``.pt2``) with a dynamic batch.  Both embed the config as an extra
file ``p3d_config.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p3d.fileio import atomic_path

__all__ = ["ExportResult", "export_model", "export_onnx", "export_torchscript", "export_program", "DEFAULT_OPSET"]

DEFAULT_OPSET = 18
FORMATS = ("onnx", "torchscript", "export")


@dataclass
class ExportResult:
    """What an export produced and how closely it reproduces the PyTorch model."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_ref: float
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        extra = ", ".join(f"{k} {v}" for k, v in self.details.items())
        return (
            f"{self.format} → {self.path} ({self.path.stat().st_size / 2**20:.1f} MiB) in {self.seconds:.1f} s; "
            f"parity on input {list(self.input_shape)}: max |Δ| = {self.max_abs_diff:.3g} "
            f"(max |output| {self.max_abs_ref:.3g})" + (f"; {extra}" if extra else "")
        )


def _config(model: nn.Module) -> dict[str, Any]:
    """The model's one config (architecture, options, input spec, classes, provenance) as JSON values."""
    return model.pretrained_cfg.to_dict()


def _clips(input_shape: tuple[int, ...], seed: int, batches: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((b, *input_shape[1:]), generator=g) for b in batches]


def _check(diff: float, ref: float, atol: float, fmt: str, path: Path) -> None:
    if not diff <= atol * max(1.0, ref):
        raise RuntimeError(
            f"{path}: {fmt} export differs from PyTorch by up to {diff:.3g} (outputs up to {ref:.3g}; "
            f"tolerance {atol:g} relative to max(1, |output|))"
        )


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...],
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-4,
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` (eval mode) for clips of ``input_shape`` ``(N, C, T, H, W)`` to an ONNX file and check it.

    The parity check runs onnxruntime on CPU with batch ``N`` and, with ``dynamic_batch``, ``N + 1``.
    """
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it; fail here with a clear message)
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript: pip install 'p3d[export]' ({e})") from e
    if not 1 <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"ONNX opset must be in 1..{onnx.defs.onnx_opset_version()} (this onnx), got {opset}")
    path = Path(path)
    model = model.eval()
    # A dynamic dimension cannot be traced from a size-1 example (torch.export specialises 0 and 1).
    x = _clips(input_shape, seed, (max(2, input_shape[0]) if dynamic_batch else input_shape[0],))[0]
    t0 = time.perf_counter()
    dyn = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    prog = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        opset_version=opset,
        input_names=["clip"],
        output_names=["logits"],
        dynamic_shapes=dyn,
        verbose=False,
    )
    if prog is None:
        raise RuntimeError("torch.onnx.export returned no program")
    with atomic_path(path) as tmp:
        prog.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
        if written != opset:  # the version converter gives up on some opsets and leaves the model as it was
            raise ValueError(f"{path}: opset {opset} was asked for, the exporter could only write opset {written}")
        for key, value in (("p3d_config", json.dumps(_config(model))), ("producer", "p3d")):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    seconds = time.perf_counter() - t0
    diff = ref = 0.0
    details: dict[str, Any] = {"opset": opset, "dynamic_batch": dynamic_batch}
    if check:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(f"the ONNX parity check needs onnxruntime: pip install 'p3d[export]' ({e})") from e
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        batches = (input_shape[0], input_shape[0] + 1) if dynamic_batch else (input_shape[0],)
        batches = tuple(dict.fromkeys(batches))
        for clip in _clips(input_shape, seed + 1, batches):
            with torch.no_grad():
                want = model(clip)
            got = torch.from_numpy(sess.run(None, {"clip": clip.numpy()})[0])
            if got.shape != want.shape:
                raise RuntimeError(f"{path}: ONNX output shape {tuple(got.shape)} != PyTorch {tuple(want.shape)}")
            diff = max(diff, float((got - want).abs().max()))
            ref = max(ref, float(want.abs().max()))
        details["checked_batches"] = list(batches)
        _check(diff, ref, atol, "ONNX", path)
    return ExportResult(path, "onnx", tuple(input_shape), diff, ref, seconds, details)


def _parity(model: nn.Module, run, input_shape: tuple[int, ...], batches: tuple[int, ...], seed: int):
    diff = ref = 0.0
    for clip in _clips(input_shape, seed + 1, batches):
        with torch.no_grad():
            want = model(clip)
            got = run(clip)
        diff = max(diff, float((got - want).abs().max()))
        ref = max(ref, float(want.abs().max()))
    return diff, ref


def _verified(
    model: nn.Module,
    path: Path,
    kind: str,
    load,
    input_shape: tuple[int, ...],
    batches: tuple[int, ...],
    t0: float,
    check: bool,
    atol: float,
    seed: int,
) -> ExportResult:
    """Time the export started at ``t0``, then reload the saved file with ``load`` and check it against
    ``model`` on seeded clips of the given batch sizes (``_check`` raises past ``atol``)."""
    seconds = time.perf_counter() - t0
    diff = ref = 0.0
    if check:
        diff, ref = _parity(model, load(str(path)), input_shape, batches, seed)
        _check(diff, ref, atol, {"torchscript": "TorchScript", "export": "torch.export"}[kind], path)
    return ExportResult(path, kind, tuple(input_shape), diff, ref, seconds)


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...],
    check: bool = True,
    atol: float = 1e-4,
    seed: int = 0,
) -> ExportResult:
    """Trace ``model`` on a clip of ``input_shape`` and save it with ``torch.jit.save`` (shape-specialised)."""
    import warnings

    path = Path(path)
    model = model.eval()
    x = _clips(input_shape, seed, (input_shape[0],))[0]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks become constants, as intended
        traced = torch.jit.trace(model, (x,), check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={"p3d_config.json": json.dumps(_config(model))})
    return _verified(model, path, "torchscript", torch.jit.load, input_shape, (input_shape[0],), t0, check, atol, seed)


def export_program(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, ...],
    check: bool = True,
    atol: float = 1e-4,
    seed: int = 0,
) -> ExportResult:
    """``torch.export`` the model (dynamic batch) and save the program (``.pt2``)."""
    path = Path(path)
    model = model.eval()
    x = _clips(input_shape, seed, (max(2, input_shape[0]),))[0]  # size-1 examples cannot be dynamic
    t0 = time.perf_counter()
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}})
    with atomic_path(path) as tmp:
        torch.export.save(ep, str(tmp), extra_files={"p3d_config.json": json.dumps(_config(model))})
    return _verified(
        model,
        path,
        "export",
        lambda f: torch.export.load(f).module(),
        input_shape,
        (input_shape[0], input_shape[0] + 1),
        t0,
        check,
        atol,
        seed,
    )


def export_model(
    model: nn.Module, path: str | Path, fmt: str, input_shape: tuple[int, ...], **kwargs: Any
) -> ExportResult:
    """Dispatch to :func:`export_onnx` (``"onnx"``), :func:`export_torchscript` or :func:`export_program`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    if len(input_shape) != 5:
        raise ValueError(f"input_shape must be (N, C, T, H, W), got {input_shape}")
    fn = {"onnx": export_onnx, "torchscript": export_torchscript, "export": export_program}[fmt]
    return fn(model, path, tuple(input_shape), **kwargs)
