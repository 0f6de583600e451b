"""The channel graph: where every channel of a network is produced, moved, added and read.

Pruning removes channels, and a channel is rarely one layer's business. The graph records, per
cfg, the few things that decide which channels must go together:

* a :class:`ChannelSpace` is the output of one producer: a (conv, BN) pair, a conv with a bias,
  or the input image. Its channels get global ids ``first .. first + size - 1``.
* a *tensor* is a sequence of positions; position ``p`` holds a channel id. Tensors are made by
  ops: :class:`Produce` (a space's output), :class:`Add` (element-wise sum: *couples* the
  channels at equal positions), :class:`Concat`, :class:`Slice` (a split group or a route
  ``group_id`` chunk) and :class:`Same` (upsample, maxpool: channels pass through).
* :class:`Consume` says which conv reads which tensor (its input channels), :class:`Fixed`
  pins a tensor's channels (a ``[yolo]`` head reads them), :class:`SameWidth` says a set of
  equally wide tensors must stay equally wide (the groups of a ``torch.split``).

Example: a stage conv followed by one ``[res2net] width=4 scale=4`` block::

    layer 1 [convolutional] filters=16   Produce A (16 ch, "layers.1.bn")
    layer 2 [res2net]                    Consume A by layers.2.conv1
        conv1/bn1                        Produce B (16 ch); G_k = Slice B[4k : 4k+4]
        K_0 reads G_0                    Produce C (4 ch, "layers.2.bns.0")
        K_1 reads C + G_1                Add couples C[j] with B[4+j]; Produce D
        K_2 reads D + G_2                Add couples D[j] with B[8+j]; Produce E
        conv3 reads cat(C, D, E, G_3)    Produce F (16 ch, "layers.2.bn3")
        output F + A                     Add couples F[j] with A[j] (residual)
                                         SameWidth(G_0, G_1, G_2, G_3, C, D, E)

Coupled channels (removed together, see ``prune.analysis``): ``A[j]~F[j]`` for each j (a
residual class), ``B[4+j]~C[j]``, ``B[8+j]~D[j]``, and ``B[j]``, ``B[12+j]``, ``E[j]`` alone.
The graph is built once from the cfg by the coupling rules in ``prune.rules``; it knows
nothing about weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

IMAGE = -1  # layer index of the input image, as in darknet.shapes.INPUT


def layer_module(layer_index: int) -> str:
    """The module path of a layer inside ``Darknet`` (its ``layers`` ModuleList)."""
    return f"layers.{layer_index}"


def moved_module(name: str, new_index: Callable[[int], int]) -> str:
    """The module ``name`` inside layer ``i`` as named once that layer is ``new_index(i)``."""
    root, index, *rest = name.split(".", 2)
    if f"{root}.{index}" != layer_module(int(index)):
        raise ValueError(f"{name!r} is not a module inside a layer")
    return ".".join([layer_module(new_index(int(index))), *rest])


@dataclass(frozen=True)
class ChannelSpace:
    """The output channels of one producer; ``bn`` is None when the conv has a bias."""

    id: int
    layer_index: int  # IMAGE for the input image
    kind: str  # section kind of that layer, "image" for the input
    role: str  # "conv", "conv1", "K_0", "conv3", "image"
    conv: str | None  # module name of the conv, e.g. "layers.5.convs.1"
    bn: str | None  # module name of its BatchNorm, e.g. "layers.5.bns.1"
    size: int
    activation: str  # applied after the BN (or bias)
    first: int  # global id of channel 0

    @property
    def channel_ids(self) -> range:
        return range(self.first, self.first + self.size)

    @property
    def label(self) -> str:
        """How a user finds it: ``layer 5 [res2net] K_1 (layers.5.bns.1)``."""
        if self.layer_index == IMAGE:
            return "input image"
        where = f"layer {self.layer_index} [{self.kind}]"
        if self.role != "conv":
            where += f" {self.role}"
        return f"{where} ({self.bn or self.conv})"


@dataclass(frozen=True)
class Produce:
    out: int
    space: int


@dataclass(frozen=True)
class Add:
    """``out = activation(sum(inputs))``; ``residual`` marks shortcuts and identity residuals."""

    out: int
    inputs: tuple[int, ...]
    activation: str
    residual: bool
    layer_index: int


@dataclass(frozen=True)
class Concat:
    out: int
    inputs: tuple[int, ...]


@dataclass(frozen=True)
class Slice:
    out: int
    input: int
    start: int
    stop: int


@dataclass(frozen=True)
class Same:
    """Channel-wise op (upsample, maxpool): every channel passes through, values change."""

    out: int
    input: int


@dataclass(frozen=True)
class Consume:
    """A conv reads ``input`` as its input channels."""

    input: int
    conv: str  # module name
    layer_index: int
    size: int  # kernel size: folding a constant is exact only for 1x1 (or unpadded) convs
    padding: int


@dataclass(frozen=True)
class Fixed:
    """The channels of ``input`` must all stay: ``reason`` says who needs them."""

    input: int
    reason: str


@dataclass(frozen=True)
class SameWidth:
    """Equally wide tensors that must keep equally many channels (the parts of a split)."""

    parts: tuple[int, ...]
    layer_index: int
    reason: str


Op = Produce | Add | Concat | Slice | Same


@dataclass
class ChannelGraph:
    """Spaces, tensors (channel id per position) and ops, in forward order."""

    spaces: list[ChannelSpace] = field(default_factory=list)
    tensors: list[tuple[int, ...]] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    consumers: list[Consume] = field(default_factory=list)
    fixed: list[Fixed] = field(default_factory=list)
    same_width: list[SameWidth] = field(default_factory=list)
    layer_outputs: list[int] = field(default_factory=list)  # tensor id per layer
    image: int = -1  # tensor id of the input image

    @property
    def num_channels(self) -> int:
        return sum(s.size for s in self.spaces)

    def space_of_conv(self, conv: str) -> ChannelSpace | None:
        return next((s for s in self.spaces if s.conv == conv), None)


class GraphBuilder:
    """What a coupling rule may do: make tensors with ops, declare readers and constraints.

    Module names are given relative to the current layer (``"convs.1"``); the builder prefixes
    the layer's module path, so rules never spell layer numbers.
    """

    def __init__(self, image_channels: int):
        self.graph = ChannelGraph()
        self.layer_index = IMAGE
        self.kind = "image"
        self.graph.image = self._produce(
            "image", None, None, image_channels, "linear", track_conv=False
        )

    # -- context -------------------------------------------------------------------------
    def enter_layer(self, layer_index: int, kind: str) -> None:
        self.layer_index, self.kind = layer_index, kind

    def _name(self, attr: str | None) -> str | None:
        return None if attr is None else f"{layer_module(self.layer_index)}.{attr}"

    def _tensor(self, channels: tuple[int, ...]) -> int:
        self.graph.tensors.append(channels)
        return len(self.graph.tensors) - 1

    def width(self, tensor: int) -> int:
        return len(self.graph.tensors[tensor])

    # -- ops -----------------------------------------------------------------------------
    def _produce(self, role, conv, bn, size, activation, track_conv=True) -> int:
        g = self.graph
        space = ChannelSpace(
            id=len(g.spaces), layer_index=self.layer_index, kind=self.kind, role=role,
            conv=self._name(conv) if track_conv else None,
            bn=self._name(bn) if track_conv else None,
            size=size, activation=activation, first=g.num_channels,
        )
        g.spaces.append(space)
        out = self._tensor(tuple(space.channel_ids))
        g.ops.append(Produce(out, space.id))
        return out

    def conv(self, input: int, *, role: str, conv: str, bn: str | None, out_channels: int,
             activation: str, size: int, padding: int) -> int:
        """A conv (+ BN) reading ``input`` and producing a new channel space."""
        self.graph.consumers.append(
            Consume(input, self._name(conv), self.layer_index, size, padding))
        return self._produce(role, conv, bn, out_channels, activation)

    def add(self, inputs: list[int], activation: str, residual: bool) -> int:
        widths = {self.width(t) for t in inputs}
        if len(widths) != 1:
            raise ValueError(f"added tensors differ in width: {sorted(widths)}")
        out = self._tensor(self.graph.tensors[inputs[0]])
        self.graph.ops.append(Add(out, tuple(inputs), activation, residual, self.layer_index))
        return out

    def concat(self, inputs: list[int]) -> int:
        if len(inputs) == 1:
            return inputs[0]
        out = self._tensor(tuple(c for t in inputs for c in self.graph.tensors[t]))
        self.graph.ops.append(Concat(out, tuple(inputs)))
        return out

    def split(self, input: int, parts: int) -> list[int]:
        """``parts`` equal slices of ``input`` (``torch.split``/``chunk``)."""
        n = self.width(input)
        step = n // parts
        if step * parts != n:
            raise ValueError(f"cannot split {n} channels into {parts} equal parts")
        outs = []
        for k in range(parts):
            out = self._tensor(self.graph.tensors[input][k * step:(k + 1) * step])
            self.graph.ops.append(Slice(out, input, k * step, (k + 1) * step))
            outs.append(out)
        return outs

    def same(self, input: int) -> int:
        out = self._tensor(self.graph.tensors[input])
        self.graph.ops.append(Same(out, input))
        return out

    # -- constraints ---------------------------------------------------------------------
    def fix(self, input: int, reason: str) -> None:
        self.graph.fixed.append(Fixed(input, reason))

    def same_width(self, parts: list[int], reason: str) -> None:
        self.graph.same_width.append(SameWidth(tuple(parts), self.layer_index, reason))
