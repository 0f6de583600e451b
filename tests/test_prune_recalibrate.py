"""BN recalibration: the running statistics are the ones computed by hand over the same images,
and nothing else of the model changes."""

import copy

import pytest
import torch
from helpers import ROOT, images, randomize_bn
from torch import nn

from darknet import Darknet
from prune.recalibrate import recalibrate_bn, tracked_batchnorms

TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"


def _model() -> Darknet:
    model = randomize_bn(Darknet(TINY), seed=3)
    for bn in tracked_batchnorms(model):
        bn.momentum = 0.03  # not the default, so a lost momentum shows
    return model.eval()


def _hand_stats(model: Darknet, batches: list[torch.Tensor]) -> dict[str, tuple]:
    """Per BN: the average over ``batches`` of the per-channel mean and unbiased variance of
    its input, with every BN normalising by its batch's statistics (train mode)."""
    probe = copy.deepcopy(model)
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in probe.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
            hooks.append(m.register_forward_pre_hook(
                lambda _m, args, name=name: inputs.setdefault(name, []).append(args[0])))
    with torch.no_grad():
        for x in batches:
            probe(x)
    for h in hooks:
        h.remove()
    stats = {}
    for name, xs in inputs.items():
        flat = [x.double().transpose(0, 1).flatten(1) for x in xs]  # [C, B*H*W] per batch
        mean = torch.stack([f.mean(1) for f in flat]).mean(0)
        var = torch.stack([f.var(1, unbiased=True) for f in flat]).mean(0)
        stats[name] = (mean, var)
    return stats


def test_running_stats_equal_the_hand_computed_ones_over_the_same_images():
    model = _model()
    data = images(10, 64, seed=1)
    batches = list(data.split(4))  # 4, 4, 2: recalibrate_bn stops after 9 images
    used = [batches[0], batches[1], batches[2][:1]]
    expected = _hand_stats(model, used)
    params = {k: v.clone() for k, v in model.named_parameters()}
    momenta = {n: m.momentum for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}

    modes = []  # a [yolo] head in train mode would skip its decode: only the BNs train
    model.yolo_layers[0].register_forward_hook(lambda m, *_: modes.append(m.training))

    assert recalibrate_bn(model, iter(batches), images=9) == 9
    assert modes == [False] * 3

    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert set(expected) == set(bns)
    for name, bn in bns.items():
        mean, var = expected[name]
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-4, atol=1e-5)
        assert bn.momentum == momenta[name]
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]), k  # gamma, beta and every conv untouched
    assert not any(m.training for m in model.modules())


def test_first_bn_gets_the_batch_statistics_of_its_conv_output():
    """An oracle that needs no hook: the first BN reads conv(x) alone."""
    model = _model()
    x = images(6, 64, seed=2)
    recalibrate_bn(model, [x])
    conv, bn = model.layers[0].conv, model.layers[0].bn
    y = nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding).double()
    y = y.transpose(0, 1).flatten(1)
    torch.testing.assert_close(bn.running_mean.double(), y.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), y.var(1), rtol=1e-5, atol=1e-6)


def test_no_image_leaves_the_statistics_as_they_were():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="no image"):
        recalibrate_bn(model, [])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
