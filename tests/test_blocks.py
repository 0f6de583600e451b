"""Our Res2Net blocks compute exactly what the seed's reference blocks compute."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_bn
from seed_reference import SeedBottle2neck, seed_triangle

from darknet.blocks import Bottle2neck, Triangle


@pytest.mark.parametrize("inplanes,scale,width", [(64, 4, None), (32, 4, 4), (48, 3, 5),
                                                   (16, 2, 3), (16, 1, 6), (128, 6, None)])
@pytest.mark.parametrize("train", [False, True])
def test_bottle2neck_matches_seed_reference(inplanes, scale, width, train):
    torch.manual_seed(0)
    ref = randomize_bn(SeedBottle2neck(inplanes, inplanes // 2, scale=scale, width=width))
    ours = Bottle2neck(inplanes, ref.width, scale)
    ours.load_state_dict(ref.state_dict())  # same names, same shapes
    ref.train(train)
    ours.train(train)
    x = torch.randn(2, inplanes, 9, 7, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y_ref, y = ref(x), ours(x2)
    torch.testing.assert_close(y, y_ref)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    for (name, p_ref), (_, p) in zip(ref.named_parameters(), ours.named_parameters(),
                                     strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)


@pytest.mark.parametrize("inplanes,planes,scale,width", [(64, 64, 4, None), (48, 32, 4, None),
                                                          (24, 0, 3, 5), (8, 0, 1, 4)])
def test_triangle_matches_seed_reference(inplanes, planes, scale, width):
    torch.manual_seed(1)
    ref = randomize_bn(seed_triangle(inplanes, planes, scale=scale, width=width)).eval()
    ours = Triangle(inplanes, ref.width, scale).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, inplanes, 6, 6)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours(x).shape[1] == ref.width * scale


def test_default_group_width_follows_the_paper():
    from darknet.sections import Res2NetSection, TriangleSection

    # floor(planes * base_width / 64): 512 * 26 / 64 = 208; triangle 512 * 16 / 64 = 128.
    assert Res2NetSection().group_width(1024) == 208
    assert Res2NetSection(planes=32).group_width(64) == 13
    assert TriangleSection(planes=512).group_width(1024) == 128
    assert TriangleSection(width=7).group_width(1024) == 7
