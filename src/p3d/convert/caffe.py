"""Import the authors' Caffe models (``.caffemodel`` + deploy ``.prototxt``) into :class:`~p3d.models.P3DResNet`.

**Reading the weights.**  A ``.caffemodel`` is a serialized ``caffe.NetParameter`` (BVLC ``caffe.proto``): field
100 ``layer`` holds ``LayerParameter`` messages with ``name`` (1), ``type`` (2) and ``blobs`` (7); each
``BlobProto`` has ``shape`` (7, ``BlobShape.dim`` = 1) and ``data`` (5, packed float32) — or ``double_data`` (8)
and the legacy ``num/channels/height/width`` (1–4).  Files of the pre-2015 format use ``layers`` (field 2,
``V1LayerParameter``: name 4, enum type 5, blobs 6) and are read too; the older V0 format is refused.  Only
these fields are decoded, straight from the protobuf wire format, so the fork's extra layer parameters need no
schema and a 270 MB file loads with one ``numpy.frombuffer`` per blob (no Caffe, no protoc, no generated code).

**Reading the network.**  The deploy prototxt (parsed by :mod:`p3d.convert.prototxt`) decides the
architecture: stage depths from the residual ``Eltwise`` layers (``res2a`` … ``res5c``), each unit's P3D type
from its wiring (A: ``*_branch2b_t_relu`` exists and T reads S; B: T reads ``bn*_branch2a`` and
``*_branch2b_st`` sums with coefficients 1, 1; C: T reads S and ``*_branch2b_st`` has 0.5, 0.5; res5: no T),
the input channels and clip shape from the ``Input`` layer, the classes from the ``InnerProduct`` layer.  Every
convolution's kernel, stride, padding and output count and every pooling layer is then checked against the
module that will run it, so a prototxt the model does not compute exactly is an error, not a silent drift.

**Mapping.**  Layer names map to parameters by the deploy files' scheme, unit by unit
(:func:`caffe_layer_map`): ``conv1``/``bn_conv1`` → ``conv1``/``bn1``; for unit ``resXY`` with BN prefix
``bnXY``: ``_branch2a`` → ``conv1``/``bn1``, ``_branch2b`` → ``conv2``/``bn2`` (S), ``_branch2b_t`` →
``conv_t``/``bn_t`` (T), ``_branch2c`` → ``conv3``/``bn3``, ``_branch1`` → ``downsample.0``/``.1``; the
``InnerProduct`` layer → ``fc``.  A ``BN`` layer's four blobs are scale, shift, moving mean and moving
variance — the fork computes ``(x − mean) / sqrt(var + eps) · scale + shift`` with ``bn_param.eps`` (default
1e-5) — and become ``weight``, ``bias``, ``running_mean``, ``running_var``; a different eps is folded into the
variance exactly.  res5 runs after ``res5a_reshape`` as 2D convolutions, so its 4D blobs load as kernels with a
unit time axis.  Every blob's shape is checked, and every layer with blobs must map: the load is reported
key by key (:class:`~p3d.models.weights.LoadReport`) and anything missing, unexpected or mis-shaped is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from p3d.convert.prototxt import Message, read_prototxt
from p3d.errors import WeightLoadError
from p3d.models.resnet import STAGE_DEPTHS, P3DResNet
from p3d.models.weights import LoadReport
from p3d.spec import caffe_bgr, caffe_flow

__all__ = [
    "CaffeLayer",
    "CaffeNet",
    "read_caffemodel",
    "analyze_prototxt",
    "caffe_layer_map",
    "convert_caffe",
]

# V1LayerParameter.LayerType values (BVLC caffe.proto) of the layer kinds that carry weights here.
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 17: "Pooling", 18: "ReLU", 20: "Softmax", 25: "Eltwise"}


@dataclass
class CaffeLayer:
    """One layer of a ``.caffemodel``: its name, type and weight blobs (float32 arrays in their Caffe shapes)."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# protobuf wire format
# ----------------------------------------------------------------------------------------------------------------
class _WireError(ValueError):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _WireError("varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """``(field_number, wire_type, value)``; value is an int (varint/fixed) or a ``(start, end)`` byte range."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _WireError("field number 0")
        if wt == 0:
            value, pos = _varint(buf, pos, end)
        elif wt == 1:
            if pos + 8 > end:
                raise _WireError("truncated fixed64")
            value, pos = (pos, pos + 8), pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise _WireError(f"length-delimited field {num} runs past the end ({n} bytes)")
            value, pos = (pos, pos + n), pos + n
        elif wt == 5:
            if pos + 4 > end:
                raise _WireError("truncated fixed32")
            value, pos = (pos, pos + 4), pos + 4
        else:
            raise _WireError(f"unsupported wire type {wt} (field {num})")
        yield num, wt, value


def _packed_varints(buf: memoryview, rng: tuple[int, int]) -> list[int]:
    out, pos = [], rng[0]
    while pos < rng[1]:
        v, pos = _varint(buf, pos, rng[1])
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _read_blob(buf: memoryview, rng: tuple[int, int]) -> np.ndarray:
    dims: list[int] = []
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    chunks: list[np.ndarray] = []
    dchunks: list[np.ndarray] = []
    for num, wt, value in _fields(buf, *rng):
        if num == 7 and wt == 2:  # shape: BlobShape
            for n2, wt2, v2 in _fields(buf, *value):
                if n2 == 1:
                    dims.extend(_packed_varints(buf, v2) if wt2 == 2 else [v2])
        elif num == 5:  # data: packed float32 (or unpacked fixed32)
            chunks.append(np.frombuffer(buf[value[0] : value[1]], dtype="<f4"))
        elif num == 8:  # double_data
            dchunks.append(np.frombuffer(buf[value[0] : value[1]], dtype="<f8"))
        elif num in legacy and wt == 0:
            legacy[num] = value
    if chunks and dchunks:
        raise _WireError("blob has both float and double data")
    data = (
        np.concatenate(chunks)
        if len(chunks) > 1
        else chunks[0]
        if chunks
        else np.concatenate(dchunks).astype(np.float32)
        if dchunks
        else np.zeros(0, np.float32)
    )
    if not dims and any(legacy.values()):
        dims = [legacy[1], legacy[2], legacy[3], legacy[4]]
    shape = tuple(int(d) for d in dims) if dims else (data.size,)
    if int(np.prod(shape, dtype=np.int64)) != data.size:
        raise _WireError(f"blob shape {list(shape)} holds {int(np.prod(shape))} values but has {data.size}")
    return data.reshape(shape)


def read_caffemodel(path: str | Path) -> dict[str, CaffeLayer]:
    """Read every layer that has a name from a binary ``.caffemodel``, in file order.

    Raises :class:`~p3d.errors.WeightLoadError` naming the file for a truncated or non-caffemodel file, the
    obsolete V0 layer format, or two layers with the same name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caffemodel not found: {path}")
    raw = path.read_bytes()
    if not raw:
        raise WeightLoadError(f"{path}: the file is empty")
    if raw[:1] in (b"n", b"l", b"#", b"i") and raw.lstrip()[:5] in (b"name:", b"layer", b"input", b"#"):
        raise WeightLoadError(f"{path}: looks like a text prototxt, not a binary .caffemodel")
    buf = memoryview(raw)
    layers: dict[str, CaffeLayer] = {}
    try:
        for num, wt, value in _fields(buf, 0, len(buf)):
            if wt != 2 or num not in (2, 100):
                continue
            name, ltype, blobs = "", "", []
            v1 = num == 2
            for n2, wt2, v2 in _fields(buf, *value):
                if v1 and n2 == 1 and wt2 == 2:
                    raise WeightLoadError(
                        f"{path}: uses Caffe's obsolete V0 layer format; upgrade it with Caffe's "
                        f"upgrade_net_proto_binary tool first"
                    )
                if wt2 == 2 and n2 == (4 if v1 else 1):
                    name = bytes(buf[v2[0] : v2[1]]).decode("utf-8", "replace")
                elif not v1 and n2 == 2 and wt2 == 2:
                    ltype = bytes(buf[v2[0] : v2[1]]).decode("utf-8", "replace")
                elif v1 and n2 == 5 and wt2 == 0:
                    ltype = _V1_TYPES.get(v2, f"V1:{v2}")
                elif wt2 == 2 and n2 == (6 if v1 else 7):
                    blobs.append(_read_blob(buf, v2))
            if not name:
                continue
            if name in layers:
                raise WeightLoadError(f"{path}: two layers are named {name!r}")
            layers[name] = CaffeLayer(name, ltype, blobs)
    except _WireError as e:
        raise WeightLoadError(f"{path}: not a readable .caffemodel (protobuf decoding failed: {e})") from e
    if not layers:
        raise WeightLoadError(f"{path}: holds no Caffe layers (is it a .caffemodel?)")
    return layers


# ----------------------------------------------------------------------------------------------------------------
# the deploy prototxt
# ----------------------------------------------------------------------------------------------------------------
_UNIT = re.compile(r"res([2-5])([a-f]|b\d+)")


@dataclass
class CaffeNet:
    """What a deploy prototxt says about the network, in the terms :class:`P3DResNet` is built from."""

    source: str
    layers: dict[str, Message]
    units: list[str]  # res2a, res2b, …, res5c
    kinds: list[str]  # "A"/"B"/"C"/"S" per unit
    depths: tuple[int, int, int, int]
    input_shape: tuple[int, ...]  # (N, C, T, H, W) of the Input layer
    width: int
    num_classes: int
    dropout: float
    fc_name: str
    style: str = "caffe"

    @property
    def pattern(self) -> str:
        """The shortest of ``ABC``/``A``/``B``/``C`` that reproduces res2..res4, else the literal unit string."""
        kinds = "".join(self.kinds[: sum(self.depths[:3])])
        for p in ("ABC", "A", "B", "C", "S"):
            if all(k == p[i % len(p)] for i, k in enumerate(kinds)):
                return p
        return kinds

    def options(self, in_channels: int | None = None) -> dict[str, Any]:
        """:class:`P3DResNet` constructor options."""
        return {
            "layers": list(self.depths),
            "pattern": self.pattern,
            "num_classes": self.num_classes,
            "in_channels": in_channels or self.input_shape[1],
            "width": self.width,
            "dropout": self.dropout,
            "style": self.style,
        }

    def architecture(self) -> str:
        """The registry name whose defaults this network shares (``p3d199`` for the released models)."""
        for depth, name in ((50, "p3d63"), (101, "p3d131"), (152, "p3d199")):
            if STAGE_DEPTHS[depth] == self.depths:
                return name
        return "p3d63"


def _ints(values: list[Any], n: int, what: str, source: str) -> tuple[int, ...]:
    """Caffe's repeated ``pad``/``kernel_size``/``stride``: one value for every axis, or one per axis."""
    if len(values) == 1:
        return (int(values[0]),) * n
    if len(values) == n:
        return tuple(int(v) for v in values)
    raise ValueError(f"{source}: {what} has {len(values)} values for {n} spatial axes")


def conv_geometry(layer: Message, ndim: int, source: str) -> dict[str, tuple[int, ...]]:
    """``kernel``, ``stride``, ``pad`` of a Convolution layer over ``ndim`` spatial axes (2 or 3)."""
    p = layer.msg("convolution_param")
    name = layer.get1("name")
    if "kernel_h" in p or "kernel_w" in p:
        kernel = (int(p.get1("kernel_h")), int(p.get1("kernel_w")))
    else:
        kernel = _ints(p.all("kernel_size"), ndim, f"layer {name!r} kernel_size", source)
    if "stride_h" in p or "stride_w" in p:
        stride = (int(p.get1("stride_h", 1)), int(p.get1("stride_w", 1)))
    else:
        stride = _ints(p.all("stride") or [1], ndim, f"layer {name!r} stride", source)
    if "pad_h" in p or "pad_w" in p:
        pad = (int(p.get1("pad_h", 0)), int(p.get1("pad_w", 0)))
    else:
        pad = _ints(p.all("pad") or [0], ndim, f"layer {name!r} pad", source)
    if len(kernel) != ndim:
        raise ValueError(f"{source}: layer {name!r}: a {len(kernel)}D kernel where a {ndim}D one was expected")
    return {"kernel": kernel, "stride": stride, "pad": pad}


class _Layers:
    """The named layers of a deploy prototxt, with checked look-ups; errors name the file."""

    def __init__(self, net: Message, src: str) -> None:
        if net.all("layers") and not net.all("layer"):
            raise ValueError(f"{src}: uses the old V1 'layers' format; only the deploy files' 'layer' format is read")
        self.src = src
        self.by_name: dict[str, Message] = {}
        for layer in net.all("layer"):
            name = layer.get1("name")
            if not isinstance(name, str):
                raise ValueError(f"{src}: a layer has no name")
            if name in self.by_name:
                raise ValueError(f"{src}: two layers are named {name!r}")
            self.by_name[name] = layer

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def of_type(self, type_: str) -> list[str]:
        return [n for n, layer in self.by_name.items() if layer.get1("type") == type_]

    def need(self, name: str, type_: str) -> Message:
        if name not in self.by_name:
            raise ValueError(f"{self.src}: no layer {name!r}; not a P3D ResNet deploy file in the authors' naming")
        got = self.by_name[name].get1("type")
        if got != type_:
            raise ValueError(f"{self.src}: layer {name!r} is {got!r}, expected {type_}")
        return self.by_name[name]


def _input_shape(net: Message, layers: _Layers) -> tuple[int, ...]:
    """``(N, C, T, H, W)`` from an Input layer, or the old ``input_shape``/``input_dim`` fields."""
    shape: tuple[int, ...] = ()
    for name in layers.of_type("Input"):
        shape = tuple(int(d) for d in layers.by_name[name].msg("input_param").msg("shape").all("dim"))
    if not shape and net.all("input_shape"):
        shape = tuple(int(d) for d in net.msg("input_shape").all("dim"))
    if not shape and net.all("input_dim"):
        shape = tuple(int(d) for d in net.all("input_dim"))
    if len(shape) != 5:
        raise ValueError(f"{layers.src}: expected a 5D input (N, C, T, H, W), got {list(shape) or 'none'}")
    return shape


def _unit_kind(u: str, layers: _Layers) -> str:
    """The block type of residual unit ``u`` read from its wiring: ``S`` (no T), ``A`` (S→T, no sum), ``B`` (T reads
    the reduced input, sum with coefficients 1, 1) or ``C`` (T reads S, coefficients 0.5, 0.5)."""
    src, b = layers.src, "bn" + u[3:]
    conv2a, bn2a = layers.need(f"{u}_branch2a", "Convolution"), layers.need(f"{b}_branch2a", "BN")
    conv2b, bn2b = layers.need(f"{u}_branch2b", "Convolution"), layers.need(f"{b}_branch2b", "BN")
    conv2c = layers.need(f"{u}_branch2c", "Convolution")
    layers.need(f"{b}_branch2c", "BN")
    if bn2a.all("bottom") != conv2a.all("top") or bn2b.all("bottom") != conv2b.all("top"):
        raise ValueError(f"{src}: unit {u}: a BN layer does not read its convolution")
    s_out = bn2b.get1("top")
    if f"{u}_branch2b_t" not in layers:
        if conv2c.get1("bottom") != s_out:
            raise ValueError(f"{src}: unit {u}: {u}_branch2c does not read {s_out!r}")
        return "S"
    t_in = layers.need(f"{u}_branch2b_t", "Convolution").get1("bottom")
    t_out = layers.need(f"{b}_branch2b_t", "BN").get1("top")
    if f"{u}_branch2b_st" not in layers:
        layers.need(f"{u}_branch2b_t_relu", "ReLU")
        if t_in != s_out or conv2c.get1("bottom") != t_out:
            raise ValueError(f"{src}: unit {u}: a cascade without '_st' sum must read S then T (P3D-A)")
        return "A"
    st = layers.need(f"{u}_branch2b_st", "Eltwise")
    layers.need(f"{u}_branch2b_st_relu", "ReLU")
    coeff = [float(c) for c in st.msg("eltwise_param").all("coeff")] or [1.0, 1.0]
    op = st.msg("eltwise_param").get1("operation", "SUM")
    if op != "SUM" or sorted(st.all("bottom")) != sorted([s_out, t_out]):
        raise ValueError(f"{src}: unit {u}: {u}_branch2b_st must SUM S and T")
    if conv2c.get1("bottom") != st.get1("top"):
        raise ValueError(f"{src}: unit {u}: {u}_branch2c does not read {u}_branch2b_st")
    if t_in == bn2a.get1("top") and coeff == [1.0, 1.0]:
        return "B"
    if t_in == s_out and coeff == [0.5, 0.5]:
        return "C"
    raise ValueError(
        f"{src}: unit {u}: T reads {t_in!r} and {u}_branch2b_st has coefficients {coeff}; "
        f"P3D-B reads {bn2a.get1('top')!r} with (1, 1), P3D-C reads {s_out!r} with (0.5, 0.5)"
    )


def analyze_prototxt(path_or_net: str | Path | Message, source: str | None = None) -> CaffeNet:
    """Read a deploy prototxt and describe its network (see the module docstring); errors name the file."""
    if isinstance(path_or_net, Message):
        net, src = path_or_net, source or "<prototxt>"
    else:
        src = str(path_or_net)
        net = read_prototxt(path_or_net)
    layers = _Layers(net, src)
    shape = _input_shape(net, layers)
    units = [n for n in layers.of_type("Eltwise") if _UNIT.fullmatch(n)]  # residual units, in order
    depths = tuple(sum(1 for u in units if u[3] == str(s)) for s in range(2, 6))
    if min(depths) < 1:
        raise ValueError(f"{src}: residual units per stage res2..res5 are {list(depths)}; every stage needs one")
    kinds = [_unit_kind(u, layers) for u in units]
    if any(k != "S" for k in kinds[sum(depths[:3]) :]):
        raise ValueError(f"{src}: res5 units must be 2D (no '_branch2b_t' layer)")
    conv1 = layers.need("conv1", "Convolution")
    layers.need("bn_conv1", "BN")
    fcs = layers.of_type("InnerProduct")
    if len(fcs) != 1:
        raise ValueError(f"{src}: expected one InnerProduct (classifier) layer, found {fcs}")
    drops = [layers.by_name[n] for n in layers.of_type("Dropout")]
    dropout = float(drops[0].msg("dropout_param").get1("dropout_ratio", 0.5)) if drops else 0.0
    first = units[depths[0]]  # res3a: the stride sits on its 1×1 (caffe) or its 3×3 (pytorch)
    strided_3x3 = max(conv_geometry(layers.need(f"{first}_branch2b", "Convolution"), 3, src)["stride"]) > 1
    return CaffeNet(
        source=src,
        layers=layers.by_name,
        units=units,
        kinds=kinds,
        depths=depths,  # type: ignore[arg-type]
        input_shape=shape,
        width=int(conv1.msg("convolution_param").get1("num_output")),
        num_classes=int(layers.by_name[fcs[0]].msg("inner_product_param").get1("num_output")),
        dropout=dropout,
        fc_name=fcs[0],
        style="pytorch" if strided_3x3 else "caffe",
    )


# ----------------------------------------------------------------------------------------------------------------
# mapping and checks
# ----------------------------------------------------------------------------------------------------------------
def caffe_layer_map(model: P3DResNet, fc_name: str = "fc") -> dict[str, tuple[str, str]]:
    """Caffe layer name → ``(module path in the model, kind)`` with kind ``"conv"``, ``"bn"`` or ``"fc"``."""
    table: dict[str, tuple[str, str]] = {"conv1": ("conv1", "conv"), "bn_conv1": ("bn1", "bn")}
    prefix = {id(m): n for n, m in model.named_modules()}
    for caffe_name, unit in model.units():
        b, p = "bn" + caffe_name[3:], prefix[id(unit)]
        parts = [("_branch2a", "conv1", "bn1"), ("_branch2b", "conv2", "bn2"), ("_branch2c", "conv3", "bn3")]
        if unit.temporal:
            parts.append(("_branch2b_t", "conv_t", "bn_t"))
        if unit.downsample is not None:
            parts.append(("_branch1", "downsample.0", "downsample.1"))
        for suffix, conv, bn in parts:
            table[caffe_name + suffix] = (f"{p}.{conv}", "conv")
            table[b + suffix] = (f"{p}.{bn}", "bn")
    if model.num_classes > 0:
        table[fc_name] = ("fc", "fc")
    return table


def _check_geometry(net: CaffeNet, model: P3DResNet, table: dict[str, tuple[str, str]]) -> None:
    """Every convolution and pooling of the prototxt against the module that computes it."""
    modules = dict(model.named_modules())
    n2d = {
        f"{u}{s}" for u in net.units[sum(net.depths[:3]) :] for s in ("_branch1", "_branch2a", "_branch2b", "_branch2c")
    }
    for name, (path, kind) in table.items():
        if kind != "conv":
            continue
        layer = net.layers.get(name)
        if layer is None:
            raise ValueError(f"{net.source}: the model needs layer {name!r}, which the prototxt lacks")
        m = modules[path]
        assert isinstance(m, nn.Conv3d)
        g = conv_geometry(layer, 2 if name in n2d else 3, net.source)
        if name in n2d:  # after res5a_reshape: 2D convolutions on each frame
            g = {k: (1 if k != "pad" else 0, *v) for k, v in g.items()}
        want = {"kernel": tuple(m.kernel_size), "stride": tuple(m.stride), "pad": tuple(m.padding)}
        p = layer.msg("convolution_param")
        if g != want or int(p.get1("num_output")) != m.out_channels or bool(p.get1("bias_term", True)):
            raise ValueError(
                f"{net.source}: layer {name!r} (kernel {g['kernel']}, stride {g['stride']}, pad {g['pad']}, "
                f"{p.get1('num_output')} outputs, bias_term {p.get1('bias_term', True)}) differs from the model's "
                f"{path} (kernel {want['kernel']}, stride {want['stride']}, pad {want['pad']}, "
                f"{m.out_channels} outputs, no bias)"
            )
    pools = [(n, layer) for n, layer in net.layers.items() if layer.get1("type") == "Pooling3D"]
    expect = [("pool1", 3, 2), ("3a_pool", 1, 1), ("4a_pool", 1, 1), ("res5a_pool", 1, 1)]
    got = [
        (
            n,
            int(layer.msg("pooling3d_param").get1("kernel_size")),
            int(layer.msg("pooling3d_param").get1("stride", 1)),
        )
        for n, layer in pools
    ]
    for n, layer in pools:
        q = layer.msg("pooling3d_param")
        if (
            q.get1("pool", "MAX") != "MAX"
            or int(q.get1("pad", 0))
            or int(q.get1("pad_l", 0))
            or int(q.get1("kernel_l", 1)) != 2
            or int(q.get1("stride_l", 1)) != 2
        ):
            raise ValueError(f"{net.source}: Pooling3D layer {n!r} is not an unpadded MAX with kernel_l 2, stride_l 2")
    if got != expect:
        raise ValueError(
            f"{net.source}: Pooling3D layers {got} differ from the model's {expect} (name, kernel, stride)"
        )
    if net.style != "caffe":
        raise ValueError(
            f"{net.source}: stride on the 3×3 with Caffe's unpadded ceil-mode pool1 is not a supported style"
        )


def _bn_eps(layer: Message | None) -> float:
    return float(layer.msg("bn_param").get1("eps", 1e-5)) if layer is not None else 1e-5


# ----------------------------------------------------------------------------------------------------------------
# conversion
# ----------------------------------------------------------------------------------------------------------------
def _fit(blob: np.ndarray, want: torch.Size, allow_unit_time: bool) -> torch.Tensor | None:
    """``blob`` in the shape ``want``: as is, with Caffe's singleton dims dropped, or a 2D kernel given T=1."""
    t = torch.from_numpy(np.array(blob, dtype=np.float32))  # a copy: the blob is a read-only view of the file
    if tuple(t.shape) == tuple(want):
        return t
    if allow_unit_time and t.dim() == 4 and len(want) == 5 and want[2] == 1 and t.shape == want[:2] + want[3:]:
        return t.unsqueeze(2)
    squeezed = [d for d in t.shape if d != 1]
    if squeezed == [d for d in want if d != 1] and t.numel() == int(np.prod(want)):
        return t.reshape(want)
    return None


class _Blobs:
    """Caffe blobs into a model's state dict, key by key, recording everything in a :class:`LoadReport`."""

    def __init__(self, model: P3DResNet, net: CaffeNet, src: str) -> None:
        self.model, self.net, self.src = model, net, src
        self.target = model.state_dict()
        self.report = LoadReport(source=src)
        self.new: dict[str, torch.Tensor] = {}

    def put(self, key: str, blob: np.ndarray, allow_unit_time: bool = False) -> torch.Tensor | None:
        value = _fit(blob, self.target[key].shape, allow_unit_time)
        if value is None:
            self.report.mismatched.append((key, tuple(self.target[key].shape), tuple(blob.shape)))
        else:
            self.new[key] = value
            self.report.loaded.append(key)
        return value

    def layer(self, name: str, layer: CaffeLayer, path: str, kind: str) -> None:
        """One Caffe layer's blobs: a conv kernel, an InnerProduct's weight and bias, or a BN's four blobs."""
        expected_type = {"conv": "Convolution", "bn": "BN", "fc": "InnerProduct"}[kind]
        if layer.type and layer.type != expected_type:
            raise WeightLoadError(f"{self.src}: layer {name!r} is a {layer.type!r} layer, expected {expected_type!r}")
        n_blobs = {"conv": 1, "bn": 4, "fc": 2}[kind]
        if len(layer.blobs) != n_blobs:
            raise WeightLoadError(
                f"{self.src}: layer {name!r} has {len(layer.blobs)} blobs, expected {n_blobs}"
                + (" (the P3D convolutions have no bias)" if kind == "conv" else "")
                + (" (scale, shift, mean, variance)" if kind == "bn" else "")
            )
        if kind == "conv":
            self.put(f"{path}.weight", layer.blobs[0], allow_unit_time=True)
        elif kind == "fc":
            self.put(f"{path}.weight", layer.blobs[0])
            self.put(f"{path}.bias", layer.blobs[1])
        else:
            self.bn(name, layer, path)

    def bn(self, name: str, layer: CaffeLayer, path: str) -> None:
        scale, shift, mean, var = layer.blobs
        self.put(f"{path}.weight", scale)
        self.put(f"{path}.bias", shift)
        self.put(f"{path}.running_mean", mean)
        v = self.put(f"{path}.running_var", var)
        if v is None:
            return
        if float(v.min()) < 0:
            raise WeightLoadError(f"{self.src}: layer {name!r}: negative variance in blob 3 (min {float(v.min())})")
        eps, module_eps = _bn_eps(self.net.layers.get(name)), self.model.get_submodule(path).eps
        if eps != module_eps:  # (x−μ)/√(σ²+ε_caffe) = (x−μ)/√((σ²+ε_caffe−ε) + ε)
            self.new[f"{path}.running_var"] = v.double().add(eps - module_eps).float()

    def missing(self, table: dict[str, tuple[str, str]], seen: set[str]) -> None:
        for name, (path, kind) in table.items():
            if name in seen:
                continue
            if kind == "bn":
                keys = [f"{path}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
            else:
                keys = [f"{path}.weight", f"{path}.bias"] if kind == "fc" else [f"{path}.weight"]
            self.report.missing.extend(f"{k} (Caffe layer {name!r})" for k in keys)


def convert_caffe(
    caffemodel: str | Path,
    prototxt: str | Path,
    strict: bool = True,
) -> tuple[P3DResNet, LoadReport, CaffeNet]:
    """Build the P3D model a deploy prototxt describes and fill it from a ``.caffemodel``.

    Returns ``(model, report, net)``; the model is in eval mode and carries the authors' preprocessing
    (:func:`p3d.spec.caffe_bgr`, or :func:`p3d.spec.caffe_flow` for 2 input channels) as ``input_spec`` and its
    provenance in ``pretrained_cfg``.  With ``strict`` (the default) any missing, unexpected or mis-shaped
    weight is a :class:`~p3d.errors.WeightLoadError` that lists them all.

    The input channel count comes from ``conv1``'s blob (the flow model is released with the RGB deploy file's
    layer list; the weights decide), the rest of the architecture from the prototxt.
    """
    net = analyze_prototxt(prototxt)
    layers = read_caffemodel(caffemodel)
    src = str(caffemodel)
    conv1 = layers.get("conv1")
    in_channels = net.input_shape[1]
    if conv1 is not None and conv1.blobs and conv1.blobs[0].ndim == 5:
        in_channels = int(conv1.blobs[0].shape[1])
    _, _, t, h, w = net.input_shape
    spec = (caffe_bgr if in_channels == 3 else caffe_flow)(clip_len=t, size=(h, w))
    model = P3DResNet(**net.options(in_channels), input_spec=spec)
    table = caffe_layer_map(model, net.fc_name)
    _check_geometry(net, model, table)
    got_kinds = [unit.kind for _, unit in model.units()]
    if got_kinds != net.kinds or [n for n, _ in model.units()] != net.units:
        raise ValueError(
            f"{net.source}: unit names/types {list(zip(net.units, net.kinds, strict=True))} are not the model's"
        )
    blobs = _Blobs(model, net, src)
    seen: set[str] = set()
    for name, layer in layers.items():
        if not layer.blobs:
            continue
        if name not in table:
            blobs.report.unexpected.append(f"{name} ({layer.type or 'no type'}, {len(layer.blobs)} blobs)")
            continue
        seen.add(name)
        blobs.layer(name, layer, *table[name])
    blobs.missing(table, seen)
    report = blobs.report
    if strict and (not report.ok or report.unexpected):
        raise WeightLoadError(f"{src}: does not fit the network of {net.source}\n{report}")
    with torch.no_grad():
        for key, value in blobs.new.items():
            blobs.target[key].copy_(value)
    model.eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(
        architecture=net.architecture(),
        source=f"Caffe ({Path(src).name}, {Path(net.source).name})",
        extra={"format": "caffe", "caffemodel": Path(src).name, "prototxt": Path(net.source).name},
    )
    return model, report, net
