"""Darknet .weights: byte-exact round trips and errors that never half-load a model."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from helpers import FULL_SIZE, OFFICIAL_CFGS, PROJECT_CFGS, ROOT, TINY_CFGS, sized

from darknet import Darknet, WeightsError, WeightsHeader

ALL_CFGS = sorted(set(PROJECT_CFGS + TINY_CFGS + OFFICIAL_CFGS))
HEADERS = [WeightsHeader(0, 2, 5, 32_013_312), WeightsHeader(0, 1, 0, 1_234_567)]
TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"


def random_weights(model: Darknet, seed: int = 0) -> Darknet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*model.parameters(), *model.buffers()]:
            if p.is_floating_point():
                p.copy_(torch.randn(p.shape, generator=g))
    return model


# Full-size files are ~250 MB each: both header versions are exercised on the small cfgs.
ROUND_TRIPS = [case for h in HEADERS for case in sized(ALL_CFGS, h)
               if h is HEADERS[0] or case.values[0].name not in FULL_SIZE]


@pytest.mark.parametrize("path,header", ROUND_TRIPS)
def test_write_read_write_is_byte_identical(tmp_path, path, header):
    model = random_weights(Darknet(path))
    first, second = tmp_path / "a.weights", tmp_path / "b.weights"
    model.save_weights(first, header)
    floats = sum(t.numel() for _, c, b in model.conv_bn_pairs()
                 for t in ([b.bias, b.weight, b.running_mean, b.running_var] if b is not None
                           else [c.bias]) + [c.weight])
    assert first.stat().st_size == len(header.to_bytes()) + 4 * floats
    loaded = Darknet(path)
    loaded.load_weights(first)
    assert loaded.header == header
    loaded.save_weights(second)  # keeps the header it read
    assert first.read_bytes() == second.read_bytes()


def test_header_seen_width_follows_the_version():
    assert len(WeightsHeader(0, 2, 0).to_bytes()) == 20
    assert len(WeightsHeader(0, 1, 0).to_bytes()) == 16
    assert len(WeightsHeader(1, 0, 0).to_bytes()) == 20
    assert len(WeightsHeader(1000, 0, 0).to_bytes()) == 16


def test_storage_order_matches_darknet(tmp_path):
    """First conv of tiny-res2net: bn.bias, bn.weight, mean, var, then conv.weight."""
    model = random_weights(Darknet(TINY))
    path = tmp_path / "w.weights"
    model.save_weights(path)
    floats = np.frombuffer(path.read_bytes(), dtype="<f4", offset=20)
    conv, bn = model.layers[0].conv, model.layers[0].bn
    expected = torch.cat([bn.bias, bn.weight, bn.running_mean, bn.running_var,
                          conv.weight.flatten()]).detach().numpy()
    np.testing.assert_array_equal(floats[: expected.size], expected)
    # the res2net block at layer 2 stores conv1/bn1 first
    block = model.layers[2]
    start = sum(t.numel() for t in model.layers[1].conv_bn_pairs()[0][1].parameters()) * 2 \
        + model.layers[1].conv.weight.numel() + expected.size
    np.testing.assert_array_equal(floats[start:start + block.bn1.num_features],
                                  block.bn1.bias.detach().numpy())


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, snap):
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k]), f"{k} was modified by a failed load"


def test_truncated_file_names_layer_and_counts_and_changes_nothing(tmp_path):
    model = random_weights(Darknet(TINY))
    path = tmp_path / "w.weights"
    model.save_weights(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.weights"
    cut.write_bytes(data[: len(data) - 4 * 50])
    target = random_weights(Darknet(TINY), seed=1)
    snap = _snapshot(target)
    with pytest.raises(WeightsError, match=r"cut\.weights: layer 15 \[convolutional\] "
                       r"\(cfg line 91\) expects 189 floats, found 139"):
        target.load_weights(cut)
    _assert_unchanged(target, snap)


def test_extra_floats_are_rejected(tmp_path):
    model = Darknet(TINY)
    path = tmp_path / "w.weights"
    model.save_weights(path)
    with open(path, "ab") as f:
        f.write(struct.pack("<3f", 1, 2, 3))
    with pytest.raises(WeightsError, match=r"3 extra after the last layer"):
        Darknet(TINY).load_weights(path)


def test_weights_for_another_cfg_are_rejected(tmp_path):
    path = tmp_path / "other.weights"
    Darknet(ROOT / "tests" / "cfgs" / "tiny-darknet.cfg").save_weights(path)
    target = random_weights(Darknet(TINY))
    snap = _snapshot(target)
    with pytest.raises(WeightsError, match=r"layer \d+ \[\w+\] \(cfg line \d+\) expects \d+ "
                       r"floats, found \d+; the cfg needs \d+ floats, the file has \d+"):
        target.load_weights(path)
    _assert_unchanged(target, snap)


def test_bad_header_and_missing_file(tmp_path):
    short = tmp_path / "short.weights"
    short.write_bytes(b"\0" * 10)
    with pytest.raises(WeightsError, match="too short for a Darknet weights header"):
        Darknet(TINY).load_weights(short)
    with pytest.raises(WeightsError, match="cannot read weights"):
        Darknet(TINY).load_weights(tmp_path / "missing.weights")


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    model = Darknet(TINY)
    path = tmp_path / "w.weights"
    model.save_weights(path)
    before = path.read_bytes()

    def broken(conv, bn):
        raise RuntimeError("disk full")

    monkeypatch.setattr("darknet.weights.storage_tensors", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        random_weights(model).save_weights(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.weights"]
