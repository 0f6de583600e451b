"""Regenerate docs/detect_demo.png: main.py detect on four demo val images, tiled 2 x 2.

    python docs/make_detect_demo.py --cfg CFG --weights WEIGHTS

The images are enlarged 3x (nearest) first so that the drawn labels are legible; the model
still sees them letterboxed to the cfg's size, as main.py eval does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import main  # noqa: E402
from yolodata import load_spec  # noqa: E402


def run() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default=str(ROOT / "cfgs" / "demo.cfg"))
    p.add_argument("--weights", required=True)
    p.add_argument("--images", type=int, nargs=4, default=(0, 1, 2, 3),
                   help="indices into the demo val split")
    p.add_argument("--out", default=str(ROOT / "docs" / "detect_demo.png"))
    args = p.parse_args()
    val = load_spec("demo").val
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        src.mkdir()
        for i in args.images:
            with Image.open(val[i]) as im:
                im.convert("RGB").resize((im.width * 3, im.height * 3), Image.NEAREST) \
                    .save(src / val[i].name)
        code = main.main(["detect", "--cfg", args.cfg, "--weights", args.weights, "--source",
                          str(src), "--data", "demo", "--out", str(out)])
        pictures = [Image.open(out / val[i].name) for i in args.images]
        w, h = pictures[0].size
        grid = Image.new("RGB", (2 * w + 8, 2 * h + 8), "white")
        for k, picture in enumerate(pictures):
            grid.paste(picture, ((k % 2) * (w + 8), (k // 2) * (h + 8)))
        grid.save(args.out)
    print(f"wrote {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(run())
