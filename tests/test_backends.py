"""Every backend (eager, BN folded, TorchScript, onnxruntime, an exported file) computes what
the model does, called the same way."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT, TINY_CFGS, randomize_bn, sized
from torch import nn

from darknet import Darknet
from shipping.backends import RUNTIMES, model_backend, open_file
from shipping.check import ExportError
from shipping.fold import fold_batchnorm, fold_conv_bn

CFGS = [*TINY_CFGS, ROOT / "cfgs" / "demo.cfg", ROOT / "cfgs" / "res2net-yolov3-triangle.cfg"]


def test_fold_conv_bn_matches_conv_then_bn():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, 2, 1, bias=True)
    bn = randomize_bn(nn.BatchNorm2d(6)).eval()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", sized(CFGS))
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_backend_gives_the_models_detections(cfg, runtime):
    model = randomize_bn(Darknet(cfg), seed=1).eval()
    x = torch.rand(1, 3, 64, 64)
    backend = model_backend(model, runtime, x)
    with torch.no_grad():
        want, got = torch.cat(model(x), 1), backend(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_folding_removes_every_batchnorm_and_leaves_the_model_alone():
    model = randomize_bn(Darknet(ROOT / "cfgs" / "demo.cfg"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in folded.modules()) == \
        sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="runtime must be one of"):
        model_backend(Darknet(TINY_CFGS[0]), "onnx", torch.rand(1, 3, 32, 32))


def test_an_exported_file_opens_as_a_backend(tmp_path):
    from shipping.formats import write_onnx

    model = randomize_bn(Darknet(TINY_CFGS[0]), seed=1).eval()
    write_onnx(model, tmp_path / "m.onnx", 64)
    backend = open_file(tmp_path / "m.onnx")
    x = torch.rand(2 if backend.input_size is None else 1, 3, 64, 64)
    assert backend.input_size == 64 and backend.columns == 5 + model.num_classes
    with torch.no_grad():
        torch.testing.assert_close(backend(x[:1]), torch.cat(model(x[:1]), 1),
                                   rtol=1e-4, atol=1e-4)
    (tmp_path / "m.txt").write_text("")
    with pytest.raises(ExportError, match="m.txt: not an exported model"):
        open_file(tmp_path / "m.txt")


def test_compare_offers_every_runtime():
    """commands/compare.py spells the choices (its --help imports no torch); keep them equal."""
    import argparse

    from commands import compare

    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    assert tuple(parser._option_string_actions["--runtime"].choices) == RUNTIMES
