"""`main.py detect`: boxes on pictures, from a cfg + weights or an exported ONNX file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "run a detector on images: pictures with boxes and one detections.json"
DESCRIPTION = """Run the detector on an image file or on every image directly inside a folder
(images in its sub-folders are counted, not read; a URL is refused: nothing is downloaded),
letterboxed to --img-size as main.py eval does (one class per box, score = objectness x class
probability > --conf-thres, class-aware NMS at --iou-thres), and write, in --out (a
missing or empty folder; by default the first free of runs/detect, runs/detect2, ...):
  <image file name>   the picture with boxes, class names and scores drawn
  detections.json     every image's detections in original-image pixels:
                      {"images": [{"path", "width", "height", "detections": [{"class", "name",
                      "score", "box": [x1, y1, x2, y2]}]}], "errors": [...], "frame",
                      settings}
Pictures are read as viewers show them (yolodata.image): the EXIF orientation of a phone
photo applied (boxes, width and height are in that frame: "frame" says so), 16-bit
greyscale scaled to 8 bits, any mode (palette, grey, CMYK, with alpha) made RGB, exactly as
training and eval read them.
The network runs in PyTorch (--cfg + --weights) or, with --onnx, in onnxruntime (a file from
main.py export; --cfg then only gives the class count and the default --img-size).

An image that cannot be read is named in one 'error: ...' line on stderr and the others are
still processed; the exit code is then 2 (0 when every image was read).

examples:
  python main.py detect --cfg cfgs/demo.cfg --weights runs/pipeline/finetune/best.weights \\
      --source ~/.cache/res2net-yolo/demo/images/val --data demo --out runs/detect
  python main.py detect --cfg runs/prune/pruned.cfg --onnx runs/export/pruned.onnx \\
      --source photo.jpg"""


DEFAULT_OUT = "runs/detect"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", required=True, help="Darknet .cfg")
    p.add_argument("--weights", default=None, help="Darknet .weights (not needed with --onnx)")
    p.add_argument("--onnx", default=None, help="run this exported ONNX file in onnxruntime")
    p.add_argument("--source", required=True, help="an image file or a folder of images")
    p.add_argument("--img-size", type=int, default=None,
                   help="square input size, a multiple of 32 (default: a static ONNX input's "
                        "size, else the cfg's [net] height)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="minimum score (default: 0.25)")
    p.add_argument("--iou-thres", type=float, default=0.45,
                   help="NMS IoU threshold (default: 0.45)")
    p.add_argument("--data", default=None,
                   help="class names: a Darknet .names file (one per line), a data .yaml, "
                        "a Darknet .data file or 'demo' (default: class numbers)")
    p.add_argument("--out", default=None,
                   help="output folder, refused when it holds files (default: runs/detect, or "
                        "runs/detect2, ... when taken)")


def run(args: argparse.Namespace) -> int:
    from common.errors import UserError
    from common.io import atomic_write_text, ensure_writable_dir
    from common.paths import printable, shown
    from darknet import Darknet
    from detection import (
        detect_image,
        detections_as_json,
        draw_detections,
        find_images,
        images_below,
        open_image,
        save_picture,
    )
    from yolodata import ImageError
    from yolodata.image import FRAME

    _check_args(args, UserError)
    images = find_images(args.source)
    if below := images_below(args.source):
        print(f"note: {below} image(s) in sub-folders of {shown(args.source)} are not "
              "processed (only the folder's own files are); pass a sub-folder as --source")
    out = Path(args.out or DEFAULT_OUT)
    if any((out / p.name).resolve() == p.resolve() for p in images):
        raise UserError(f"--out {out} would overwrite the source images; choose another folder")
    out = _out_dir(args.out, UserError)
    ensure_writable_dir(out, create=False)
    model = Darknet(args.cfg)
    detector, img_size = _detector(model, args)
    names = _names(args.data, model.num_classes, UserError)
    results, errors = [], []
    for path in images:
        try:
            rgb = open_image(path)
        except ImageError as e:
            print(f"error: {printable(str(e))}", file=sys.stderr)
            errors.append({"path": shown(path), "error": e.reason})
            continue
        det = detect_image(detector, rgb, img_size, args.conf_thres, args.iou_thres)
        save_picture(draw_detections(rgb, det, names), out / path.name)
        results.append({"path": shown(path), "width": rgb.width, "height": rgb.height,
                        "detections": detections_as_json(det, names)})
        print(f"{shown(path)}: {len(det)} detection{'s' * (len(det) != 1)}")
    atomic_write_text(out / "detections.json", json.dumps({
        "cfg": args.cfg, "weights": args.weights, "onnx": args.onnx, "img_size": img_size,
        "conf_thres": args.conf_thres, "iou_thres": args.iou_thres, "frame": FRAME,
        "images": results,
        "errors": errors}, indent=1) + "\n")
    print(f"wrote {len(results)} picture{'s' * (len(results) != 1)} and "
          f"{shown(out / 'detections.json')}")
    return 2 if errors else 0


def _out_dir(out: str | None, UserError) -> Path:
    """One run per folder, so pictures of two runs never mix and an earlier detections.json
    is never replaced: an explicit --out must be missing or empty; without --out, the first
    of runs/detect, runs/detect2, ... that is (as `main.py train` numbers its runs)."""
    def used(path: Path) -> bool:
        return path.is_dir() and any(path.iterdir())

    if out is not None:
        if used(Path(out)):
            raise UserError(f"--out {out} holds files (an earlier run?); detect writes each run "
                            "into a folder of its own: choose another --out, or leave it out "
                            "for a fresh runs/detect<N>")
        return Path(out)
    path, n = Path(DEFAULT_OUT), 1
    while used(path):
        n += 1
        path = Path(f"{DEFAULT_OUT}{n}")
    return path


def _check_args(args, UserError) -> None:
    from commands import check_img_size

    check_img_size(args.img_size)
    if not 0 <= args.conf_thres < 1 or not 0 <= args.iou_thres <= 1:
        raise UserError("--conf-thres must be in [0, 1) and --iou-thres in [0, 1], got "
                        f"{args.conf_thres}, {args.iou_thres}")
    if (args.weights is None) == (args.onnx is None):
        raise UserError("give --weights (PyTorch) or --onnx (onnxruntime), one of them")


def _detector(model, args):
    """The backend that maps images to detections, and the input size to run it at."""
    from shipping.backends import TorchBackend
    from shipping.deployed import open_deployed

    if args.onnx is None:
        model.load_weights(args.weights)
        return TorchBackend(model.eval(), "eager"), args.img_size or model.cfg.net.height
    return open_deployed(args.onnx, None, args.img_size, model.num_classes,
                         dynamic_size=model.cfg.net.height)


def _names(data: str | None, num_classes: int, UserError) -> tuple[str, ...]:
    if data is None:
        return tuple(str(k) for k in range(num_classes))
    if data == "demo":
        from yolodata import DEMO_NAMES as names
    elif data.endswith(".names"):
        try:
            names = [line.strip() for line in Path(data).read_text().splitlines()
                     if line.strip()]
        except OSError as e:
            raise UserError(f"{data}: cannot read class names ({e.strerror})") from None
    else:
        from yolodata import load_spec

        names = load_spec(data).names
    if len(names) != num_classes:
        raise UserError(f"{data}: {len(names)} class names but the model detects {num_classes}")
    return tuple(names)

