"""Typed, frozen descriptions of Darknet ``.cfg`` sections.

A section is data: one dataclass per section type, whose fields *are* the cfg keys it
interprets (``from_`` stands for ``from``). Field types drive parsing and writing, so adding a
key is adding a field. Keys Darknet knows but this project does not interpret are listed in
``PASSTHROUGH`` and kept verbatim in ``extra`` so they survive a read/write round trip.

A section also declares how it is wired: ``REFS`` names the field holding the layers it reads
besides (or, with ``READS_PREVIOUS`` false, instead of) the previous one, and ``HEAD`` marks a
detection head, whose output is a model output. Code that walks a network asks the section
(``sources``, ``refs``, ``with_refs``), never its type. Those indices are stored absolute
(resolved once at parse time); ``relative`` remembers how each was written so the writer can
give the user back the same form.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

ACTIVATIONS = ("linear", "leaky", "relu", "logistic", "mish", "swish")


def key(default=None, *, cfg_name: str | None = None, choices: tuple | None = None):
    """A dataclass field that is a cfg key. ``default=REQUIRED`` marks a mandatory key."""
    return field(default=default, metadata={"key": cfg_name, "choices": choices})


REQUIRED = object()


@dataclass(frozen=True, kw_only=True)
class Section:
    """What every section carries besides its keys."""

    kind: ClassVar[str]
    PASSTHROUGH: ClassVar[frozenset[str]] = frozenset()
    REFS: ClassVar[str | None] = None  # field holding the layer indices it reads
    READS_PREVIOUS: ClassVar[bool] = True  # reads the previous layer (the image for layer 0)
    HEAD: ClassVar[bool] = False  # a detection head: its output is one of the model's

    line: int = field(default=0, compare=False)  # 1-based line of the ``[header]``
    index: int = field(default=-1, compare=False)  # layer index; -1 for [net]
    extra: tuple[tuple[str, str], ...] = ()  # Darknet keys we keep but don't interpret
    given: frozenset[str] = field(default=frozenset(), compare=False)  # keys the user wrote
    relative: tuple[bool, ...] = field(default=(), compare=False)  # per ref: written as -k?

    @property
    def refs(self) -> tuple[int, ...]:
        """Absolute indices of the layers named in ``REFS`` (empty for most sections)."""
        return getattr(self, self.REFS) if self.REFS else ()

    @property
    def sources(self) -> tuple[int, ...]:
        """Absolute indices of every layer it reads, the previous one first (-1: the image)."""
        return ((self.index - 1,) if self.READS_PREVIOUS else ()) + self.refs

    def with_refs(self, refs: tuple[int, ...], index: int | None = None) -> Section:
        """The same section at ``index`` (default: its own) reading layers ``refs``."""
        index = self.index if index is None else index
        if not self.REFS:
            return dataclasses.replace(self, index=index)
        return dataclasses.replace(self, index=index, **{self.REFS: tuple(refs)})

    @classmethod
    def refs_key(cls) -> str | None:
        """The cfg key of ``REFS`` (``from`` for the field ``from_``)."""
        if not cls.REFS:
            return None
        return next(k for k, f in cls.keys().items() if f.name == cls.REFS)

    @classmethod
    def keys(cls) -> dict[str, dataclasses.Field]:
        """Map cfg key name -> dataclass field, for the keys this section interprets."""
        return {
            (f.metadata["key"] or f.name): f
            for f in dataclasses.fields(cls)
            if "key" in f.metadata
        }


@dataclass(frozen=True, kw_only=True)
class NetSection(Section):
    kind: ClassVar[str] = "net"
    PASSTHROUGH: ClassVar[frozenset[str]] = frozenset(
        """batch subdivisions momentum decay angle saturation exposure hue learning_rate
        burn_in max_batches policy steps scales step gamma power mosaic flip blur mixup
        cutmix letter_box max_chart_loss adam B1 B2 eps gaussian_noise track time_steps
        optimized_memory aspect min_crop max_crop inputs label_smooth_eps random
        mosaic_bound contrastive unsupervised seed sequential""".split()
    )

    width: int = key(416)
    height: int = key(416)
    channels: int = key(3)


@dataclass(frozen=True, kw_only=True)
class ConvSection(Section):
    kind: ClassVar[str] = "convolutional"

    filters: int = key(REQUIRED)
    size: int = key(1)
    stride: int = key(1)
    pad: int = key(0)
    padding: int = key(0)
    groups: int = key(1)
    batch_normalize: int = key(0)
    activation: str = key("logistic", choices=ACTIVATIONS)

    @property
    def effective_padding(self) -> int:
        # Darknet: ``pad=1`` means "same" padding and overrides ``padding``.
        return self.size // 2 if self.pad else self.padding


@dataclass(frozen=True, kw_only=True)
class ShortcutSection(Section):
    """``out = activation(x[index - 1] + x[from])``."""

    kind: ClassVar[str] = "shortcut"
    PASSTHROUGH: ClassVar[frozenset[str]] = frozenset({"weights_type", "weights_normalization"})
    REFS: ClassVar[str] = "from_"

    from_: tuple[int, ...] = key(REQUIRED, cfg_name="from")
    activation: str = key("linear", choices=ACTIVATIONS)


@dataclass(frozen=True, kw_only=True)
class RouteSection(Section):
    """Concat of ``layers``; with ``groups`` each input contributes slice ``group_id``."""

    kind: ClassVar[str] = "route"
    REFS: ClassVar[str] = "layers"
    READS_PREVIOUS: ClassVar[bool] = False

    layers: tuple[int, ...] = key(REQUIRED)
    groups: int = key(1)
    group_id: int = key(0)


@dataclass(frozen=True, kw_only=True)
class UpsampleSection(Section):
    kind: ClassVar[str] = "upsample"

    stride: int = key(2)


@dataclass(frozen=True, kw_only=True)
class MaxpoolSection(Section):
    """Darknet max-pool: output = (in + padding - size) // stride + 1."""

    kind: ClassVar[str] = "maxpool"

    size: int | None = key(None)  # Darknet default: equal to stride
    stride: int = key(1)
    padding: int | None = key(None)  # Darknet default: size - 1

    @property
    def effective_size(self) -> int:
        return self.stride if self.size is None else self.size

    @property
    def effective_padding(self) -> int:
        return self.effective_size - 1 if self.padding is None else self.padding


@dataclass(frozen=True, kw_only=True)
class YoloSection(Section):
    kind: ClassVar[str] = "yolo"
    HEAD: ClassVar[bool] = True
    PASSTHROUGH: ClassVar[frozenset[str]] = frozenset(
        """jitter truth_thresh random iou_thresh cls_normalizer iou_normalizer
        obj_normalizer iou_loss iou_thresh_kind nms_kind beta_nms max_delta resize
        counters_per_class label_smooth_eps focal_loss objectness_smooth
        map max max_boxes""".split()
    )

    mask: tuple[int, ...] | None = key(None)  # default: every anchor
    anchors: tuple[float, ...] = key(REQUIRED)
    classes: int = key(20)
    num: int = key(1)
    ignore_thresh: float = key(0.5)
    # The decode (common.boxes.YoloDecode): AlexeyAB's centre scale, and scaled-YOLOv4's
    # coordinates (inputs already logistic-activated by the conv in front).
    scale_x_y: float = key(1.0)
    new_coords: int = key(0, choices=(0, 1))

    @property
    def anchor_ids(self) -> tuple[int, ...]:
        return tuple(range(self.num)) if self.mask is None else self.mask

    @property
    def masked_anchors(self) -> list[tuple[float, float]]:
        """The (w, h) anchors in input pixels that this head predicts."""
        return [(self.anchors[2 * i], self.anchors[2 * i + 1]) for i in self.anchor_ids]


@dataclass(frozen=True, kw_only=True)
class MultiScaleSection(Section):
    """Shared keys of the Res2Net-style blocks (docs/extending.md, "The Res2Net blocks").

    The group ``width`` is explicit or derived from ``planes`` as
    ``floor(planes * base_width / 64)``; the pruner always writes it explicitly.
    ``inplanes`` is optional and, when given, must equal the actual input channels.
    """

    BASE_WIDTH: ClassVar[int]

    inplanes: int | None = key(None)
    planes: int | None = key(None)
    width: int | None = key(None)
    scale: int = key(4)
    base_width: float | None = key(None)

    def group_width(self, in_channels: int) -> int:
        if self.width is not None:
            return self.width
        planes = self.planes if self.planes is not None else self.default_planes(in_channels)
        base = self.BASE_WIDTH if self.base_width is None else self.base_width
        return int(math.floor(planes * base / 64.0))

    def default_planes(self, in_channels: int) -> int:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Res2NetSection(MultiScaleSection):
    """Bottle2neck replacing a Darknet-53 residual unit; output channels = input channels."""

    kind: ClassVar[str] = "res2net"
    BASE_WIDTH: ClassVar[int] = 26

    def default_planes(self, in_channels: int) -> int:
        return in_channels // 2  # expansion 2 with an identity residual


@dataclass(frozen=True, kw_only=True)
class TriangleSection(MultiScaleSection):
    """Res2-Triangle: the multi-scale branch alone; output is ``width * scale`` channels."""

    kind: ClassVar[str] = "triangle"
    BASE_WIDTH: ClassVar[int] = 16

    def default_planes(self, in_channels: int) -> int:
        return in_channels


SECTION_TYPES: dict[str, type[Section]] = {
    cls.kind: cls
    for cls in (
        NetSection,
        ConvSection,
        ShortcutSection,
        RouteSection,
        UpsampleSection,
        MaxpoolSection,
        YoloSection,
        Res2NetSection,
        TriangleSection,
    )
}

# Darknet spells some sections two ways.
SECTION_ALIASES = {"conv": "convolutional", "network": "net", "max": "maxpool"}
