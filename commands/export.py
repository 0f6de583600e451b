"""`main.py export`: ship a model as ONNX (FP32 or INT8), OpenVINO IR or plain Darknet layers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("ship a model: ONNX (FP32 or INT8, checked in onnxruntime), OpenVINO IR, or a cfg "
        "other Darknet readers run")
DESCRIPTION = """Write a cfg + weights in a form other tools run.

--format onnx (default): DIR/<cfg stem>.onnx, ONNX opset 17, BatchNorm folded into the
  convolutions. One input 'images' [B, 3, H, W] (RGB in 0..1, letterboxed as main.py eval
  does), one output 'output' [B, N, 5 + classes]: every candidate box as cx, cy, w, h in
  input pixels, objectness and class probabilities (the eval forward of every [yolo] head,
  concatenated). NMS is not in the graph. --dynamic makes the batch, height and width axes
  dynamic. The file is loaded in onnxruntime, run on random images and compared with the
  PyTorch model: above 1e-4 of the output scale it is an error and no file is left.

--format openvino: DIR/<cfg stem>.xml + .bin, OpenVINO IR of that ONNX graph (weights kept
  FP32; with --int8, of the quantized graph, which OpenVINO runs with integer kernels), run
  in OpenVINO on random images and compared with the PyTorch model as above. Needs the
  optional OpenVINO package (pip install -r requirements-openvino.txt).

--int8 (onnx or openvino): DIR/<cfg stem>-int8.onnx (or .xml + .bin, beside the FP32 files
  without replacing them), the same graph quantized by onnxruntime's static quantization,
  QDQ: convolution weights int8 per output channel, activations uint8 asymmetric, their
  ranges from percentile calibration (99.995% of |activation| kept; 8 images' activations
  in memory at a time) on --calib-images training images of --data (spread evenly over the
  list, letterboxed as eval does). Everything after the heads' last convolutions (the box and
  probability decode) and those convolutions stay float; so do the activations, adds and
  concats between convolutions. Chosen on the demo pipeline's fine-tuned slim model (300
  calibration images, mAP@.5:.95, FP32 0.5999; bench/bench_quant.py): as chosen 0.5974;
  percentile 99.99 0.5930, 99.999 0.5959; 7-bit weights (reduce_range) 0.5943; MinMax
  0.5853, with 7-bit weights 0.5804; entropy 0.5969; the heads' last convs quantized too
  0.5745. The dense demo model moves within 0.002 under all but the last
  (docs/shipping.md). --int8-ops body quantizes the ops between the convs too, so
  tensors stay 8-bit from conv to conv: res2net-yolov3 @416, slim, in onnxruntime 0.23
  instead of 0.27 of the dense FP32 latency (OpenVINO: no change), while the demo's slim
  model lost 0.0043 instead of 0.0025.
  Before the file is written, the INT8 file's mAP on the val set is measured in the runtime
  that ships it and printed beside the FP32 graph's, with both latencies (batch 1): INT8 is
  not faster everywhere (small models at small sizes can be slower; the timings say so). A
  mAP@.5:.95 drop above --max-map-drop is an error and no file is written.

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
      --int8 --data demo --out runs/export
  python main.py export --cfg runs/prune/pruned.cfg --weights runs/finetune/best.weights \\
      --format darknet --out runs/export"""


CALIB_IMAGES = 300  # --calib-images' default (the pipeline's ship stage uses it too)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", required=True, help="Darknet .cfg")
    p.add_argument("--weights", required=True, help="Darknet .weights")
    p.add_argument("--format", choices=("onnx", "openvino", "darknet"), default="onnx",
                   help="onnx (default), openvino (IR .xml + .bin) or darknet (plain Darknet "
                        "sections)")
    p.add_argument("--img-size", type=int, default=None,
                   help="onnx: square input size the graph is traced and checked at, a multiple "
                        "of 32 (default: the cfg's [net] height)")
    p.add_argument("--dynamic", action="store_true",
                   help="onnx, openvino: dynamic batch, height and width axes (for onnxruntime "
                        "and OpenVINO; OpenCV DNN 4.x refuses such files: leave it off for "
                        "OpenCV)")
    p.add_argument("--int8", action="store_true",
                   help="onnx, openvino: quantize to INT8 (QDQ), mAP measured before writing")
    p.add_argument("--data", default="demo",
                   help="--int8: data .yaml, Darknet .data file or 'demo' whose training "
                        "images calibrate and whose val split measures mAP (default: demo)")
    p.add_argument("--calib-images", type=int, default=CALIB_IMAGES,
                   help=f"--int8: training images to calibrate on (default: {CALIB_IMAGES})")
    p.add_argument("--int8-ops", choices=("conv", "body"), default="conv",
                   help="--int8: what is quantized: conv (the convolutions, default) or body "
                        "(also the LeakyReLU, adds, concats, splits and upsamples between "
                        "them: faster in onnxruntime at large inputs, a little less accurate; "
                        "see above)")
    p.add_argument("--max-map-drop", type=float, default=0.01,
                   help="--int8: refuse a file losing more mAP@.5:.95 than this against FP32 "
                        "(default: 0.01)")
    p.add_argument("--out", default="runs/export", help="output folder (default: runs/export)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: files, max_abs_diff (and int8: the mAPs and "
                        "latencies)")


def run(args: argparse.Namespace) -> int:
    from commands import check_img_size
    from common.artefacts import INT8_STEM
    from common.errors import UserError
    from common.io import ensure_writable_dir
    from darknet import Darknet
    from darknet.exporting import export, export_paths

    check_img_size(args.img_size)
    _check_args(args, UserError)
    model = Darknet(args.cfg, args.weights)
    out = Path(args.out)
    stem = out / (Path(args.cfg).stem + (INT8_STEM if args.int8 else ""))
    targets = export_paths(stem, args.format)
    inputs = {Path(args.cfg).resolve(), Path(args.weights).resolve()}
    if any(t.resolve() in inputs for t in targets):
        raise UserError(f"--out {out} would overwrite the input {args.cfg} or {args.weights}; "
                        "choose another folder")
    ensure_writable_dir(out, create=False)
    img_size = args.img_size or model.cfg.net.height
    int8 = _int8_plan(args, model, img_size) if args.int8 else None
    written = export(model, stem, args.format, args.img_size,
                     args.dynamic, int8)
    if args.json:
        print(json.dumps({"files": [str(t) for t in targets],
                          "max_abs_diff": written.max_abs_diff, **_int8_json(written.int8)}))
    else:
        print(_summary(model, args, written))
        if written.int8 is not None:
            print(_int8_summary(written.int8, args.max_map_drop))
        print(f"wrote {', '.join(str(t) for t in targets)}")
    return 0


def _check_args(args, UserError) -> None:
    if args.format == "darknet" and (args.dynamic or args.img_size is not None or args.int8):
        raise UserError("--dynamic, --img-size and --int8 apply to --format onnx and openvino")
    if args.int8_ops != "conv" and not args.int8:
        raise UserError("--int8-ops applies to --int8")
    if not args.max_map_drop >= 0:
        raise UserError(f"--max-map-drop must be >= 0, got {args.max_map_drop}")


def _int8_plan(args, model, img_size: int):
    """Calibration images and the val-set mAP function, read before any export work."""
    from functools import partial

    from engine.data import EpochLoader, load_data
    from engine.evaluator import evaluate_batches
    from shipping.formats import Int8Plan
    from shipping.quantize import OP_SETS, QuantSettings, calibration_images
    from yolodata import load_spec

    spec = load_spec(args.data)
    data = load_data(spec, img_size, model.num_classes, train=False)  # the class check first
    images = calibration_images(spec.train, args.calib_images, img_size)
    loader = EpochLoader(data.val, 32, shuffle=False, workers=0)
    return Int8Plan(images, partial(evaluate_batches, batches=loader, class_names=spec.names),
                    args.max_map_drop, QuantSettings(ops=OP_SETS[args.int8_ops]))


def _int8_summary(report, max_drop: float) -> str:
    lines = [f"INT8 vs FP32 in {report.runtime}: mAP@.5:.95 {report.int8.map:.4f} vs "
             f"{report.fp32.map:.4f} (drop {report.map_drop:+.4f}, allowed {max_drop:g}), "
             f"mAP@.5 {report.int8.map50:.4f} vs {report.fp32.map50:.4f}; latency (batch 1) "
             f"{report.int8_ms:.2f} vs {report.fp32_ms:.2f} ms"]
    if report.int8_ms > report.fp32_ms:
        lines.append(f"note: INT8 is slower than FP32 here ({report.int8_ms:.2f} vs "
                     f"{report.fp32_ms:.2f} ms): at this model size the quantize/dequantize "
                     "steps cost more than the integer convolutions save")
    return "\n".join(lines)


def _int8_json(report) -> dict:
    if report is None:
        return {}
    return {"int8": {"runtime": report.runtime, "map": report.int8.map,
                     "map50": report.int8.map50, "fp32_map": report.fp32.map,
                     "fp32_map50": report.fp32.map50, "ms": report.int8_ms,
                     "fp32_ms": report.fp32_ms}}


def _summary(model, args, written) -> str:
    """One line on what was written and how close it is to the PyTorch model."""
    from shipping.onnx_export import OPSET

    if args.format in ("onnx", "openvino"):
        img_size = args.img_size or model.cfg.net.height
        what = "ONNX" if args.format == "onnx" else "OpenVINO IR of ONNX"
        runtime = "onnxruntime" if args.format == "onnx" else "OpenVINO"
        return (f"{what} opset {OPSET}, input {img_size}x{img_size}"
                f"{' (dynamic batch, height, width)' if args.dynamic else ''}; {runtime} "
                f"(FP32) vs PyTorch: max abs diff {written.max_abs_diff:.3g} "
                f"({written.max_rel_diff:.3g} of the output scale)")
    if not written.lowered:
        return "no [res2net]/[triangle] sections: cfg and weights written unchanged"
    return (f"{len(model.cfg.layers)} layers lowered to {written.layers} plain Darknet layers; "
            f"raw outputs vs the original model: max abs diff {written.max_abs_diff:.3g}")
