"""Write the Res2Net-YOLOv3 cfgs of this folder from their architecture tables.

    python -m cfgs.generate          # rewrites cfgs/res2net-yolov3*.cfg and cfgs/demo*.cfg

The tables follow the seed design note (shared/seed/res2net-yolov3.txt, sections 3 and 4):
Darknet-53 with every residual unit replaced by a ``[res2net]`` Bottle2neck, and YOLOv3 heads
whose first two 1x1/3x3 pairs become ``[triangle]`` blocks in the triangle variant. Route
targets are looked up by name while the file is written, so no layer number is typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

COCO_ANCHORS = (10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326)
# Square-ish anchors spanning the demo's object sizes (6 px to ~100 px at 128-160 px input).
DEMO_ANCHORS = (6, 6, 10, 9, 14, 14, 20, 19, 28, 27, 38, 40, 52, 50, 70, 72, 100, 96)

NET_TRAINING_KEYS = """batch=64
subdivisions=16
momentum=0.9
decay=0.0005
angle=0
saturation=1.5
exposure=1.5
hue=.1
learning_rate=0.001
burn_in=1000
max_batches=500200
policy=steps
steps=400000,450000
scales=.1,.1"""


@dataclass(frozen=True)
class Spec:
    """One network: input size, stage widths and repeats, head widths, blocks in the heads."""

    name: str
    comment: str
    size: int
    stem: int  # first conv's filters
    stages: tuple[tuple[int, int], ...]  # (channels, repeats) per downsampling stage
    first_width: int | None  # explicit group width for the first stage's blocks
    head: tuple[int, int, int]  # 1x1 filters of the three heads, coarse to fine
    classes: int
    anchors: tuple[int, ...]
    triangle: bool


class Writer:
    """Accumulates sections and remembers named layers for routes."""

    def __init__(self):
        self.blocks: list[str] = []
        self.names: dict[str, int] = {}
        self.count = 0  # layers written so far (index of the next one)

    def add(self, kind: str, name: str | None = None, **keys) -> None:
        lines = [f"[{kind}]"] + [f"{k}={v}" for k, v in keys.items()]
        self.blocks.append("\n".join(lines))
        if name:
            self.names[name] = self.count
        self.count += 1

    def comment(self, text: str) -> None:
        self.blocks.append(f"# {text}")

    def conv(self, filters: int, size: int, stride: int = 1, name: str | None = None) -> None:
        self.add("convolutional", name, batch_normalize=1, filters=filters, size=size,
                 stride=stride, pad=1, activation="leaky")

    def route(self, *targets: str | int) -> None:
        # Relative for the previous few layers, absolute for far ones, as Darknet cfgs do.
        refs = [t if isinstance(t, int) else self.names[t] for t in targets]
        text = ", ".join(str(r - self.count) if self.count - r <= 4 or r < 0 else str(r)
                         for r in refs)
        self.add("route", layers=text)

    def text(self) -> str:
        return "\n\n".join(self.blocks) + "\n"


def yolo(w: Writer, spec: Spec, mask: str) -> None:
    anchors = ",  ".join(f"{a},{b}" for a, b in zip(spec.anchors[::2], spec.anchors[1::2],
                                                     strict=True))
    w.add("yolo", mask=mask, anchors=anchors, classes=spec.classes, num=9, jitter=".3",
          ignore_thresh=".7", truth_thresh=1, random=1)


def backbone(w: Writer, spec: Spec) -> None:
    w.conv(spec.stem, 3)
    for stage, (channels, repeats) in enumerate(spec.stages):
        w.comment(f"Downsample {stage}: {channels} channels, {repeats} Res2Net block(s)")
        w.conv(channels, 3, 2)
        for r in range(repeats):
            keys = {"planes": channels // 2}
            if stage == 0 and spec.first_width:
                keys["width"] = spec.first_width
            w.add("res2net", f"stage{stage}" if r == repeats - 1 else None, **keys)


def head(w: Writer, spec: Spec, filters: int, mask: str) -> None:
    """Two 1x1/3x3 pairs (or two triangles), the route-out 1x1, a 3x3 and the detector."""
    for _ in range(2):
        if spec.triangle:
            w.add("triangle", planes=filters)
        else:
            w.conv(filters, 1)
            w.conv(filters * 2, 3)
    w.conv(filters, 1, name=f"head{filters}")
    w.conv(filters * 2, 3)
    w.add("convolutional", size=1, stride=1, pad=1, filters=3 * (spec.classes + 5),
          activation="linear")
    yolo(w, spec, mask)


def render(spec: Spec) -> str:
    w = Writer()
    w.comment(spec.comment)
    w.add("net", None, width=spec.size, height=spec.size, channels=3)
    w.blocks[-1] += "\n" + NET_TRAINING_KEYS
    w.count -= 1  # [net] is not a layer
    backbone(w, spec)
    last = len(spec.stages) - 1
    for i, (filters, mask) in enumerate(zip(spec.head, ("6,7,8", "3,4,5", "0,1,2"),
                                            strict=True)):
        w.comment(f"YOLO head {i}: stride {2 ** (len(spec.stages) - i)}")
        if i:
            w.route(f"head{spec.head[i - 1]}")
            w.conv(filters, 1)
            w.add("upsample", stride=2)
            w.route(-1 + w.count, f"stage{last - i}")
        head(w, spec, filters, mask)
    return w.text()


FULL = dict(size=608, stem=32, stages=((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)),
            first_width=None, head=(512, 256, 128), classes=80, anchors=COCO_ANCHORS)
# Demo: channels x1/4, stage repeats 1,1,2,2,1, 4 shape classes, 128 px.
DEMO = dict(size=128, stem=8, stages=((16, 1), (32, 1), (64, 2), (128, 2), (256, 1)),
            first_width=4, head=(128, 64, 32), classes=4, anchors=DEMO_ANCHORS)

SPECS = (
    Spec("res2net-yolov3", "Res2Net-YOLOv3: Darknet-53 residual units -> Res2Net Bottle2neck",
         triangle=False, **FULL),
    Spec("res2net-yolov3-triangle", "Res2Net-YOLOv3 with Res2-Triangle heads",
         triangle=True, **FULL),
    Spec("demo", "Demo: Res2Net backbone + Res2-Triangle heads at x1/4 width for CPU training",
         triangle=True, **DEMO),
)


def main() -> None:
    for spec in SPECS:
        (HERE / f"{spec.name}.cfg").write_text(render(spec))


if __name__ == "__main__":
    main()
