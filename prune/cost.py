"""GFLOPs of a Darknet model, counted fast.

``darknet.summary.count_gflops`` runs thop on a full forward pass. Every layer of these
networks costs in proportion to its output area, so when each layer's area at ``img_size`` is
the same multiple of its area at a small probe size, counting at the probe and scaling is
exact (checked through the published shapes) and ~10x faster at 608 px.
"""

from __future__ import annotations

from darknet.errors import CfgError
from darknet.model import Darknet
from darknet.shapes import infer_shapes
from darknet.summary import count_gflops

PROBE = 32


def _areas(model: Darknet, size: int) -> list[int]:
    return [x.h * x.w for s in infer_shapes(model.cfg, size, size) for x in (*s.inputs, s.out)]


def gflops(model: Darknet, img_size: int) -> float:
    """Same number as ``count_gflops(model, img_size)``."""
    if img_size % PROBE == 0 and img_size > PROBE:
        factor = (img_size // PROBE) ** 2
        try:
            scales = all(a == b * factor for a, b in
                         zip(_areas(model, img_size), _areas(model, PROBE), strict=True))
        except CfgError:
            scales = False
        if scales:
            return count_gflops(model, PROBE) * factor
    return count_gflops(model, img_size)
