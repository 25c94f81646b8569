"""Shared fixtures for the conversion tests: a small deploy prototxt + random caffemodel, built independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.convert.caffe_reference import parse_net, run_net, tiny_deploy, write_caffemodel


def make_caffe(tmp_path, name="tiny", x_shape=(1, 3, 8, 64, 64), seed=0, legacy_shape=False, **deploy):
    """Write ``name.prototxt`` and ``name.caffemodel``; return their paths, the input clip, the interpreter's
    outputs (float64) and the blobs."""
    text = tiny_deploy(shape=x_shape, **deploy)
    net = parse_net(text)
    blobs: dict = {}
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(seed))
    env = run_net(net, x, blobs, np.random.default_rng(seed))
    proto = tmp_path / f"{name}.prototxt"
    proto.write_text(text)
    model = tmp_path / f"{name}.caffemodel"
    write_caffemodel(net, blobs, model, legacy_shape=legacy_shape)
    return proto, model, x, env, blobs


@pytest.fixture
def tiny_caffe(tmp_path):
    return make_caffe(tmp_path)
