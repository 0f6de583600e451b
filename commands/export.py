"""`main.py export`: ship a model as ONNX or as plain Darknet layers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "ship a model: ONNX (checked in onnxruntime) or a cfg other Darknet readers run"
DESCRIPTION = """Write a cfg + weights in a form other tools run.

--format onnx (default): DIR/<cfg stem>.onnx, ONNX opset 17, BatchNorm folded into the
  convolutions. One input 'images' [B, 3, H, W] (RGB in 0..1, letterboxed as main.py eval
  does), one output 'output' [B, N, 5 + classes]: every candidate box as cx, cy, w, h in
  input pixels, objectness and class probabilities (the eval forward of every [yolo] head,
  concatenated). NMS is not in the graph. --dynamic makes the batch, height and width axes
  dynamic. The file is loaded in onnxruntime, run on random images and compared with the
  PyTorch model: above 1e-4 of the output scale it is an error and no file is left.

--format darknet: DIR/<cfg stem>.cfg + .weights with every [res2net] and [triangle] lowered to
  standard sections ([convolutional], [route] with groups, [shortcut], a [route] concat), all
  route/shortcut indices renumbered; the weights' floats are unchanged. The route groups need
  AlexeyAB's Darknet (or OpenCV DNN 4.x, or tools that read its cfgs); pjreddie's Darknet has
  no [route] groups. The lowered model's raw outputs are checked against the original's
  before anything is written. A cfg without [res2net]/[triangle] is written unchanged; a
  block plain sections cannot express (a [res2net] that reads the image: its residual
  [shortcut] cannot refer to the input) is an error naming its cfg line.

examples:
  python main.py export --cfg runs/prune/pruned.cfg --weights runs/finetune/best.weights
  python main.py export --cfg cfgs/demo.cfg --weights w.weights --format onnx --dynamic --json
  python main.py export --cfg runs/prune/pruned.cfg --weights runs/finetune/best.weights \\
      --format darknet --out runs/export"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", required=True, help="Darknet .cfg")
    p.add_argument("--weights", required=True, help="Darknet .weights")
    p.add_argument("--format", choices=("onnx", "darknet"), default="onnx",
                   help="onnx (default) or darknet (plain Darknet sections)")
    p.add_argument("--img-size", type=int, default=None,
                   help="onnx: square input size the graph is traced and checked at, a multiple "
                        "of 32 (default: the cfg's [net] height)")
    p.add_argument("--dynamic", action="store_true",
                   help="onnx: dynamic batch, height and width axes")
    p.add_argument("--out", default="runs/export", help="output folder (default: runs/export)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: files, max_abs_diff")


def run(args: argparse.Namespace) -> int:
    from commands import check_img_size
    from common.errors import UserError
    from common.io import ensure_writable_dir
    from darknet import Darknet
    from darknet.exporting import export, export_paths

    check_img_size(args.img_size)
    if args.format == "darknet" and (args.dynamic or args.img_size is not None):
        raise UserError("--dynamic and --img-size apply to --format onnx only")
    model = Darknet(args.cfg, args.weights)
    out = Path(args.out)
    targets = export_paths(out / Path(args.cfg).stem, args.format)
    inputs = {Path(args.cfg).resolve(), Path(args.weights).resolve()}
    if any(t.resolve() in inputs for t in targets):
        raise UserError(f"--out {out} would overwrite the input {args.cfg} or {args.weights}; "
                        "choose another folder")
    ensure_writable_dir(out, create=False)
    result = export(model, out / Path(args.cfg).stem, args.format, args.img_size, args.dynamic)
    if args.json:
        print(json.dumps({"files": [str(t) for t in result.files],
                          "max_abs_diff": result.max_abs_diff}))
        return 0
    print(f"wrote {', '.join(str(t) for t in result.files)}")
    print(_summary(result, model, args))
    return 0


def _summary(result, model, args) -> str:
    """One line on the check the written files passed."""
    from darknet.onnx_export import OPSET

    if args.format == "onnx":
        img_size = args.img_size or model.cfg.net.height
        return (f"ONNX opset {OPSET}, input {img_size}x{img_size}"
                f"{' (dynamic batch, height, width)' if args.dynamic else ''}; onnxruntime vs "
                f"PyTorch: max abs diff {result.max_abs_diff:.3g} "
                f"({result.max_rel_diff:.3g} of the output scale)")
    if not result.lowered:
        return "no [res2net]/[triangle] sections: cfg and weights written unchanged"
    return (f"{len(model.cfg.layers)} layers lowered to {result.layers} plain Darknet layers; "
            f"raw outputs vs the original model: max abs diff {result.max_abs_diff:.3g}")
