"""Test-side Caffe tooling, independent of p3d.convert: a protobuf schema built at run time, a generator of
small deploy prototxts in the authors' naming scheme, a layer-by-layer interpreter of a deploy net in plain
torch, and a ``.caffemodel`` writer.

The schema parses the prototxt with ``google.protobuf.text_format`` (not p3d's tokenizer) and serializes the
caffemodel with protobuf (not p3d's wire decoder).  Field numbers follow BVLC ``caffe.proto`` for everything a
caffemodel reader relies on (NetParameter.layer 100; LayerParameter name 1, type 2, bottom 3, top 4, blobs 7;
BlobProto shape 7, data 5, double_data 8, num..width 1..4; BlobShape.dim 1); the fork's ``bn_param`` and
``pooling3d_param`` get made-up numbers (the real ones are unknown and a reader must skip them anyway).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "string": _F.TYPE_STRING,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "int32": _F.TYPE_INT32,
    "uint32": _F.TYPE_UINT32,
    "int64": _F.TYPE_INT64,
    "bool": _F.TYPE_BOOL,
}
_ENGINE = ("DEFAULT", "CAFFE", "CUDNN")
# message -> [(field, number, type, repeated, packed)]; type "msg:X" / "enum:X" (X nested enum of the message)
_SCHEMA: dict[str, list[tuple]] = {
    "BlobShape": [("dim", 1, "int64", True, True)],
    "BlobProto": [
        ("shape", 7, "msg:BlobShape", False, False),
        ("data", 5, "float", True, True),
        ("double_data", 8, "double", True, True),
        ("num", 1, "int32", False, False),
        ("channels", 2, "int32", False, False),
        ("height", 3, "int32", False, False),
        ("width", 4, "int32", False, False),
    ],
    "FillerParameter": [
        ("type", 1, "string", False, False),
        ("value", 2, "float", False, False),
        ("std", 6, "float", False, False),
    ],
    "ParamSpec": [("lr_mult", 3, "float", False, False), ("decay_mult", 4, "float", False, False)],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", False, False),
        ("bias_term", 2, "bool", False, False),
        ("pad", 3, "uint32", True, False),
        ("kernel_size", 4, "uint32", True, False),
        ("stride", 6, "uint32", True, False),
        ("weight_filler", 7, "msg:FillerParameter", False, False),
        ("engine", 15, "enum:Engine", False, False),
    ],
    "BNParameter": [
        ("slope_filler", 1, "msg:FillerParameter", False, False),
        ("bias_filler", 2, "msg:FillerParameter", False, False),
        ("momentum", 3, "float", False, False),
        ("eps", 4, "float", False, False),
        ("frozen", 5, "bool", False, False),
    ],
    "Pooling3DParameter": [
        ("pool", 1, "enum:PoolMethod", False, False),
        ("pad", 2, "uint32", False, False),
        ("kernel_size", 3, "uint32", False, False),
        ("stride", 4, "uint32", False, False),
        ("pad_l", 7, "uint32", False, False),
        ("kernel_l", 10, "uint32", False, False),
        ("stride_l", 13, "uint32", False, False),
    ],
    "PoolingParameter": [("pool", 1, "enum:PoolMethod", False, False), ("global_pooling", 12, "bool", False, False)],
    "ReLUParameter": [("engine", 2, "enum:Engine", False, False)],
    "EltwiseParameter": [("operation", 1, "enum:EltwiseOp", False, False), ("coeff", 2, "float", True, False)],
    "ReshapeParameter": [("shape", 1, "msg:BlobShape", False, False)],
    "DropoutParameter": [("dropout_ratio", 1, "float", False, False)],
    "InnerProductParameter": [
        ("num_output", 1, "uint32", False, False),
        ("weight_filler", 3, "msg:FillerParameter", False, False),
        ("bias_filler", 4, "msg:FillerParameter", False, False),
    ],
    "InputParameter": [("shape", 1, "msg:BlobShape", True, False)],
    "LayerParameter": [
        ("name", 1, "string", False, False),
        ("type", 2, "string", False, False),
        ("bottom", 3, "string", True, False),
        ("top", 4, "string", True, False),
        ("param", 6, "msg:ParamSpec", True, False),
        ("blobs", 7, "msg:BlobProto", True, False),
        ("convolution_param", 106, "msg:ConvolutionParameter", False, False),
        ("dropout_param", 108, "msg:DropoutParameter", False, False),
        ("eltwise_param", 110, "msg:EltwiseParameter", False, False),
        ("inner_product_param", 117, "msg:InnerProductParameter", False, False),
        ("pooling_param", 121, "msg:PoolingParameter", False, False),
        ("relu_param", 123, "msg:ReLUParameter", False, False),
        ("reshape_param", 133, "msg:ReshapeParameter", False, False),
        ("input_param", 143, "msg:InputParameter", False, False),
        ("bn_param", 1137, "msg:BNParameter", False, False),
        ("pooling3d_param", 1138, "msg:Pooling3DParameter", False, False),
    ],
    "NetParameter": [("name", 1, "string", False, False), ("layer", 100, "msg:LayerParameter", True, False)],
}
_ENUMS = {
    "Engine": _ENGINE,
    "PoolMethod": ("MAX", "AVE", "STOCHASTIC"),
    "EltwiseOp": ("PROD", "SUM", "MAX"),
}


def _build() -> dict[str, type]:
    fdp = descriptor_pb2.FileDescriptorProto(name="p3d_test_caffe.proto", package="caffe", syntax="proto2")
    for name, fields in _SCHEMA.items():
        m = fdp.message_type.add(name=name)
        used_enums = {t.split(":")[1] for _, _, t, _, _ in fields if t.startswith("enum:")}
        for e in sorted(used_enums):
            en = m.enum_type.add(name=e)
            for i, v in enumerate(_ENUMS[e]):
                en.value.add(name=v, number=i)
        for fname, num, t, rep, packed in fields:
            f = m.field.add(name=fname, number=num)
            f.label = _F.LABEL_REPEATED if rep else _F.LABEL_OPTIONAL
            if t.startswith("msg:"):
                f.type, f.type_name = _F.TYPE_MESSAGE, f".caffe.{t[4:]}"
            elif t.startswith("enum:"):
                f.type, f.type_name = _F.TYPE_ENUM, f".caffe.{name}.{t[5:]}"
            else:
                f.type = _TYPES[t]
            if packed:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}")) for n in _SCHEMA}


MESSAGES = _build()
NetParameter = MESSAGES["NetParameter"]


def parse_net(text: str):
    """A prototxt's text → NetParameter (google.protobuf.text_format)."""
    return text_format.Parse(text, NetParameter())


# ------------------------------------------------------------------------------------------------------------
# a small deploy prototxt in the authors' naming scheme
# ------------------------------------------------------------------------------------------------------------
def _conv(name, bottom, out, kernel, stride, pad):
    k = "".join(f"    kernel_size: {v}\n" for v in kernel)
    s = "".join(f"    stride: {v}\n" for v in stride)
    p = "".join(f"    pad: {v}\n" for v in pad)
    return (
        f'layer {{\n  name: "{name}"\n  type: "Convolution"\n  bottom: "{bottom}"\n  top: "{name}"\n'
        f"  param {{\n    lr_mult: 1\n    decay_mult: 1\n  }}\n"
        f"  convolution_param {{\n    engine: CAFFE\n    num_output: {out}\n    bias_term: false\n{p}{k}{s}"
        f'    weight_filler {{\n      type: "gaussian"\n      std: 0.001\n    }}\n  }}\n}}\n'
    )


def _bn(name, bottom, eps=None):
    e = f"    eps: {eps}\n" if eps is not None else ""
    return (
        f'layer {{\n  name: "{name}"\n  type: "BN"\n  bottom: "{bottom}"\n  top: "{name}"\n'
        f'  bn_param {{\n    slope_filler {{\n      type: "constant"\n      value: 1\n    }}\n'
        f"{e}    frozen: true\n  }}\n}}\n"
    )


def _relu(name, blob):
    return (
        f'layer {{\n  name: "{name}"\n  type: "ReLU"\n  relu_param {{\n    engine:CAFFE\n  }}\n'
        f'  bottom: "{blob}"\n  top: "{blob}"\n}}\n'
    )


def _sum(name, a, b, coeff=None):
    c = "".join(f"    coeff: {v}\n" for v in coeff) if coeff else ""
    return (
        f'layer {{\n  name: "{name}"\n  type: "Eltwise"\n  bottom: "{a}"\n  bottom: "{b}"\n  top: "{name}"\n'
        f"  eltwise_param {{\n    operation: SUM\n{c}  }}\n}}\n"
    )


def _pool3d(name, bottom, k, s):
    return (
        f'layer {{\n  name: "{name}"\n  type: "Pooling3D"\n  bottom: "{bottom}"\n  top: "{name}"\n'
        f"  pooling3d_param {{\n    pool: MAX\n    pad: 0\n    kernel_size: {k}\n    stride: {s}\n"
        f"    pad_l: 0\n    kernel_l: 2\n    stride_l: 2\n  }}\n}}\n"
    )


def unit_names(stage: int, n: int) -> list[str]:
    return [f"res{stage}{'abcdef'[i] if n <= 6 or i == 0 else f'b{i}'}" for i in range(n)]


def tiny_deploy(
    depths=(2, 2, 2, 1),
    width: int = 4,
    num_classes: int = 5,
    shape=(1, 3, 8, 64, 64),
    kinds: str = "ABC",
    eps: dict[str, float] | None = None,
    fc_name: str = "fc_tiny",
) -> str:
    """A deploy prototxt with the official files' layer names, layer order and wiring, at a small size."""
    eps = eps or {}
    n, c, t, h, w = shape
    out = ['name: "TINY_P3D"\nlayer {\n  name: "data"\n  type: "Input"\n  top: "data"\n  input_param {\n    shape {\n']
    out.append("".join(f"      dim: {d}\n" for d in shape) + "    }\n  }\n}\n")
    out.append(_conv("conv1", "data", width, (1, 7, 7), (1, 2, 2), (0, 3, 3)))
    out.append(_bn("bn_conv1", "conv1", eps.get("bn_conv1")))
    out.append(_relu("conv1_relu", "bn_conv1"))
    out.append(_pool3d("pool1", "bn_conv1", 3, 2))
    hh = math.ceil((math.ceil(h / 2) - 3) / 2) + 1
    prev, g = "pool1", 0
    for si, stage in enumerate(range(2, 6)):
        planes = width * 2**si
        names = unit_names(stage, depths[si])
        for i, u in enumerate(names):
            b = "bn" + u[3:]
            stride = 2 if (i == 0 and stage > 2) else 1
            if i == 0 and stage > 2:
                pool = {3: "3a_pool", 4: "4a_pool", 5: "res5a_pool"}[stage]
                out.append(_pool3d(pool, prev, 1, 1))
                prev = pool
                if stage == 5:
                    out.append(
                        f'layer {{\n  name: "res5a_reshape"\n  type: "Reshape"\n  bottom: "{prev}"\n'
                        f'  top: "res5a_reshape"\n  reshape_param {{\n    shape {{\n      dim: 0\n      dim: 0\n'
                        f"      dim: {hh}\n      dim: {hh}\n    }}\n  }}\n}}\n"
                    )
                    prev = "res5a_reshape"
                hh = math.ceil(hh / 2)
            d2 = stage == 5
            k1, k3 = ((1,), (3,)) if d2 else ((1, 1, 1), (1, 3, 3))
            s1 = (stride,) if d2 else (1, stride, stride)
            one = (1,) if d2 else (1, 1, 1)
            p0, p1 = ((0,), (1,)) if d2 else ((0, 0, 0), (0, 1, 1))
            if i == 0:
                out.append(_conv(f"{u}_branch1", prev, planes * 4, k1, s1, p0))
                out.append(_bn(f"{b}_branch1", f"{u}_branch1", eps.get(f"{b}_branch1")))
                shortcut = f"{b}_branch1"
            else:
                shortcut = prev
            out.append(_conv(f"{u}_branch2a", prev, planes, k1, s1, p0))
            out.append(_bn(f"{b}_branch2a", f"{u}_branch2a", eps.get(f"{b}_branch2a")))
            out.append(_relu(f"{u}_branch2a_relu", f"{b}_branch2a"))
            out.append(_conv(f"{u}_branch2b", f"{b}_branch2a", planes, k3, one, p1))
            out.append(_bn(f"{b}_branch2b", f"{u}_branch2b", eps.get(f"{b}_branch2b")))
            out.append(_relu(f"{u}_branch2b_relu", f"{b}_branch2b"))
            last = f"{b}_branch2b"
            if not d2:
                kind = kinds[g % len(kinds)]
                g += 1
                t_in = f"{b}_branch2a" if kind == "B" else f"{b}_branch2b"
                out.append(_conv(f"{u}_branch2b_t", t_in, planes, (3, 1, 1), (1, 1, 1), (1, 0, 0)))
                out.append(_bn(f"{b}_branch2b_t", f"{u}_branch2b_t", eps.get(f"{b}_branch2b_t")))
                if kind == "A":
                    out.append(_relu(f"{u}_branch2b_t_relu", f"{b}_branch2b_t"))
                    last = f"{b}_branch2b_t"
                else:
                    coeff = (1, 1) if kind == "B" else (0.5, 0.5)
                    out.append(_sum(f"{u}_branch2b_st", f"{b}_branch2b", f"{b}_branch2b_t", coeff))
                    out.append(_relu(f"{u}_branch2b_st_relu", f"{u}_branch2b_st"))
                    last = f"{u}_branch2b_st"
            out.append(_conv(f"{u}_branch2c", last, planes * 4, k1, one, p0))
            out.append(_bn(f"{b}_branch2c", f"{u}_branch2c", eps.get(f"{b}_branch2c")))
            out.append(_sum(u, shortcut, f"{b}_branch2c"))
            out.append(_relu(f"{u}_relu", u))
            prev = u
    out.append(
        f'layer {{\n  name: "pool5"\n  type: "Pooling"\n  bottom: "{prev}"\n  top: "pool5"\n'
        f"  pooling_param {{\n    pool: AVE\n    global_pooling: true\n  }}\n}}\n"
        f'layer {{\n  name: "pool5_drop"\n  type: "Dropout"\n  bottom: "pool5"\n  top: "pool5"\n'
        f"  dropout_param {{\n    dropout_ratio: 0.5\n  }}\n}}\n"
        f'layer {{\n  name: "{fc_name}"\n  type: "InnerProduct"\n  bottom: "pool5"\n  top: "{fc_name}"\n'
        f"  inner_product_param {{\n    num_output: {num_classes}\n  }}\n}}\n"
        f'layer {{\n  name: "prob"\n  type: "Softmax"\n  bottom: "{fc_name}"\n  top: "prob"\n}}\n'
    )
    return "".join(out)


# ------------------------------------------------------------------------------------------------------------
# interpreter
# ------------------------------------------------------------------------------------------------------------
def _rep(values, n, default):
    v = list(values) or [default]
    return tuple(int(x) for x in (v * n if len(v) == 1 else v))


def _caffe_pool_max(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """Caffe max pooling without padding: out = ceil((in - k) / s) + 1 windows per axis (the last may overhang)."""
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride, strict=True):
        out = math.ceil((size - k) / s) + 1
        pads.append(max(0, (out - 1) * s + k - size))
    padded = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)], value=-math.inf)
    return F.max_pool3d(padded, kernel, stride) if x.dim() == 5 else F.max_pool2d(padded, kernel, stride)


def run_net(net, x: torch.Tensor, blobs: dict[str, list[np.ndarray]], rng: np.random.Generator | None = None):
    """Execute a deploy NetParameter on ``x`` in float64; create missing blobs from ``rng`` (random but sane).

    Returns the dict of every top blob.  BN: (x − mean) / sqrt(var + eps) · scale + shift with blobs
    (scale, shift, mean, var) and ``bn_param.eps`` (default 1e-5).
    """
    env: dict[str, torch.Tensor] = {}
    x = x.double()
    for layer in net.layer:
        t = layer.type
        bottoms = [env[b] for b in layer.bottom] if t != "Input" else []
        if t == "Input":
            env[layer.top[0]] = x
            continue
        b0 = bottoms[0] if bottoms else None
        if t == "Convolution":
            p = layer.convolution_param
            nd = b0.dim() - 2
            k, s, pad = _rep(p.kernel_size, nd, 1), _rep(p.stride, nd, 1), _rep(p.pad, nd, 0)
            if layer.name not in blobs:
                fan_in = b0.shape[1] * math.prod(k)
                blobs[layer.name] = [
                    (rng.standard_normal((p.num_output, b0.shape[1], *k)) * math.sqrt(2 / fan_in)).astype(np.float32)
                ]
            w = torch.from_numpy(blobs[layer.name][0]).double()
            y = (F.conv3d if nd == 3 else F.conv2d)(b0, w, None, s, pad)
        elif t == "BN":
            ch = b0.shape[1]
            if layer.name not in blobs:
                shape = (1, ch, 1, 1)  # the fork's blob shape
                blobs[layer.name] = [
                    rng.uniform(0.5, 1.5, shape).astype(np.float32),
                    (0.1 * rng.standard_normal(shape)).astype(np.float32),
                    (0.1 * rng.standard_normal(shape)).astype(np.float32),
                    rng.uniform(0.5, 1.5, shape).astype(np.float32),
                ]
            scale, shift, mean, var = (torch.from_numpy(a).double().reshape(-1) for a in blobs[layer.name])
            eps = layer.bn_param.eps if layer.bn_param.HasField("eps") else 1e-5
            view = (1, ch) + (1,) * (b0.dim() - 2)
            y = (b0 - mean.view(view)) / torch.sqrt(var.view(view) + eps) * scale.view(view) + shift.view(view)
        elif t == "ReLU":
            y = torch.relu(b0)
        elif t == "Eltwise":
            coeff = list(layer.eltwise_param.coeff) or [1.0] * len(bottoms)
            y = sum(c * b for c, b in zip(coeff, bottoms, strict=True))
        elif t == "Pooling3D":
            q = layer.pooling3d_param
            y = _caffe_pool_max(b0, (q.kernel_l, q.kernel_size, q.kernel_size), (q.stride_l, q.stride, q.stride))
        elif t == "Reshape":
            dims = list(layer.reshape_param.shape.dim)
            new = [b0.shape[i] if d == 0 else d for i, d in enumerate(dims)]
            y = b0.reshape(new)
        elif t == "Pooling":
            assert layer.pooling_param.global_pooling and layer.pooling_param.pool == 1  # AVE
            y = b0.mean(dim=tuple(range(2, b0.dim())), keepdim=True)
        elif t == "Dropout":
            y = b0
        elif t == "InnerProduct":
            flat = b0.flatten(1)
            if layer.name not in blobs:
                n_out = layer.inner_product_param.num_output
                blobs[layer.name] = [
                    (0.1 * rng.standard_normal((n_out, flat.shape[1]))).astype(np.float32),
                    (0.1 * rng.standard_normal(n_out)).astype(np.float32),
                ]
            w, bias = (torch.from_numpy(a).double() for a in blobs[layer.name])
            y = flat @ w.T + bias
        elif t == "Softmax":
            y = torch.softmax(b0, dim=1)
        else:
            raise NotImplementedError(t)
        env[layer.top[0]] = y
    return env


def write_caffemodel(net, blobs: dict[str, list[np.ndarray]], path, legacy_shape: bool = False) -> None:
    """Serialize ``net`` with ``blobs`` attached (every other field kept, as Caffe does) to ``path``."""
    out = NetParameter()
    out.CopyFrom(net)
    for layer in out.layer:
        for arr in blobs.get(layer.name, []):
            b = layer.blobs.add()
            if legacy_shape and arr.ndim <= 4:
                dims = (1,) * (4 - arr.ndim) + arr.shape
                b.num, b.channels, b.height, b.width = dims
            else:
                b.shape.dim.extend(arr.shape)
            b.data.extend(arr.ravel().tolist())
    with open(path, "wb") as f:
        f.write(out.SerializeToString())
