"""How a pruned layer is written back to a cfg: one rule per section type.

A rule gets the section and the kept channel count of each of its producers (by role:
``"conv"``, ``"conv1"``, ``"K_0"``, ``"conv3"``) and returns the slim section. Sections
without producers keep their keys: their channel counts follow from their inputs.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from darknet.cfg import Cfg
from darknet.sections import (
    ConvSection,
    MaxpoolSection,
    MultiScaleSection,
    Res2NetSection,
    RouteSection,
    Section,
    ShortcutSection,
    TriangleSection,
    UpsampleSection,
    YoloSection,
)

if TYPE_CHECKING:
    from .analysis import ChannelAnalysis
    from .select import KeepPlan

SlimRule = Callable[[Section, Mapping[str, int]], Section]


def _conv(s: ConvSection, kept: Mapping[str, int]) -> Section:
    return dataclasses.replace(s, filters=kept["conv"])


def _multiscale(s: MultiScaleSection, kept: Mapping[str, int]) -> Section:
    # An explicit width; planes/inplanes would contradict the slim input, so they go.
    return dataclasses.replace(s, width=kept["K_0"], planes=None, inplanes=None)


def _unchanged(s: Section, kept: Mapping[str, int]) -> Section:
    return s


SLIM_RULES: dict[type[Section], SlimRule] = {
    ConvSection: _conv,
    ShortcutSection: _unchanged,
    RouteSection: _unchanged,
    UpsampleSection: _unchanged,
    MaxpoolSection: _unchanged,
    YoloSection: _unchanged,
    Res2NetSection: _multiscale,
    TriangleSection: _multiscale,
}


def slim_cfg(cfg: Cfg, kept: Mapping[int, Mapping[str, int]]) -> Cfg:
    """``cfg`` with every layer resized; ``kept[layer_index][role]`` = kept channels."""
    layers = tuple(SLIM_RULES[type(s)](s, kept.get(s.index, {})) for s in cfg.layers)
    return dataclasses.replace(cfg, layers=layers)


def kept_counts(analysis: ChannelAnalysis, plan: KeepPlan) -> dict[int, dict[str, int]]:
    """``kept[layer_index][role]``: the channels ``plan`` keeps of each producer."""
    kept: dict[int, dict[str, int]] = defaultdict(dict)
    for space in analysis.graph.spaces:
        if space.conv is not None:
            kept[space.layer_index][space.role] = int(
                plan.keep[analysis.classes_of_space(space)].sum())
    return kept


def plan_cfg(analysis: ChannelAnalysis, plan: KeepPlan) -> Cfg:
    """The slim cfg of ``plan``, from channel counts alone: what a search costs a plan by
    (``darknet.cost``) without building a model."""
    return slim_cfg(analysis.cfg, kept_counts(analysis, plan))
