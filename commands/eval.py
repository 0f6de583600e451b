"""`main.py eval`: COCO mAP of Darknet weights on a dataset's val split."""

from __future__ import annotations

import argparse
import json

HELP = "mAP@.5 and mAP@.5:.95 of a cfg + weights, or of an exported file, on a val split"
DESCRIPTION = """Run the detector over the val split (letterboxed to --img-size, batched), keep
detections with score > --conf-thres after class-aware NMS at --iou-thres, and compute
COCO-standard mAP@.5 and mAP@.5:.95 (pycocotools, boxes mapped back to original image pixels)
with a per-class breakdown.

--model FILE scores an exported file itself instead of a cfg + weights: an .onnx (FP32 or
INT8, from main.py export) in onnxruntime (--runtime openvino: in OpenVINO), or an OpenVINO
IR .xml (its .bin beside it) in OpenVINO. The same loader, letterbox, NMS and metric code
runs, so the figures are those of the file that ships (an INT8 file's own mAP); the input
size is the file's (give --img-size for a file exported with --dynamic).

--metric darknet also prints mAP@.5 as AlexeyAB Darknet's `./darknet detector map` computes it
(src/detector.c, validate_detector_map), from the same forward passes: detections with
objectness x class probability > 0.005 after per-class NMS at IoU 0.45; per image each
detection takes its class's truth of highest IoU when IoU > 0.5, and over the score-ranked
list a truth counts once (later hits are false positives). With P[k], R[k] the precision
and recall after the k-th of a class's n detections (by score, k = 0..n-1),
  AP = sum over k < n-1 of (R[k+1] - R[k]) * max(P[j] for j >= k)  +  R[0] * max(P)
(the area under the precision-recall curve at each unique recall, Darknet's default
-points 0), mAP = the mean over all classes (a class without truth counts 0; COCO leaves it
out); precision, recall, F1 and average IoU at -thresh 0.25. Per-class lines as Darknet
prints them; --json gains "darknet_map50". Images are letterboxed here, as everywhere in this
project; Darknet stretches them unless the cfg says letter_box=1.

examples:
  python main.py eval --cfg cfgs/demo.cfg --weights runs/train/best.weights
  python main.py eval --cfg my.cfg --weights my.weights --data coco.yaml --img-size 416 --json
  python main.py eval --model runs/pipeline/ship/pruned-int8.onnx
  python main.py eval --cfg yolov3-voc.cfg --weights w.weights --data voc/data.yaml \\
      --img-size 416 --metric darknet"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", default=None, help="Darknet .cfg (with --weights)")
    p.add_argument("--weights", default=None, help="Darknet .weights (with --cfg)")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="instead of --cfg/--weights: an exported .onnx or OpenVINO .xml, "
                        "scored in the runtime that runs it")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="--model FILE.onnx: the runtime to run it in (an .xml always runs "
                        "in OpenVINO) (default: onnxruntime)")
    p.add_argument("--data", default="demo",
                   help="data .yaml, Darknet .data file or 'demo' (default: demo)")
    p.add_argument("--img-size", type=int, default=None,
                   help="square input size, a multiple of 32 (default: the cfg's [net] height)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    p.add_argument("--conf-thres", type=float, default=0.001,
                   help="minimum score (objectness x class probability) (default: 0.001)")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold (default: 0.6)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="cpu or cuda (default: cuda when available; --model: cpu)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader processes (default: 0 on CPU, up to 8 with CUDA)")
    p.add_argument("--metric", choices=("coco", "darknet"), default="coco",
                   help="coco, or darknet: also Darknet's detector-map mAP@.5 (see above) "
                        "(default: coco)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: map50, map, per_class, images, seconds "
                        "(with --metric darknet: darknet_map50 too)")


def run(args: argparse.Namespace) -> int:
    from commands import check_img_size
    from engine.data import skipped_summary
    from engine.evaluator import evaluate
    from evaluation import format_map_table
    from evaluation.darknet_map import format_darknet_map

    check_img_size(args.img_size)
    model, img_size, device = _model(args)
    result = evaluate(model, args.data, img_size, args.batch_size, args.conf_thres,
                      args.iou_thres, device, args.workers, darknet=args.metric == "darknet")
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        if result.darknet:
            print(format_darknet_map(result.darknet), end="\n\n")
        print(format_map_table(result.coco))
        where = f" in {model.name} ({args.model})" if args.model else ""
        print(f"{result.images} images at {result.img_size} px{where} in "
              f"{result.seconds:.1f}s")
        if result.skipped:
            print(skipped_summary(result.skipped))
    return 0


def _model(args):
    """What is scored: a Darknet from --cfg/--weights, or the --model file's backend (CPU);
    with the input size and device to run it at."""
    from common.errors import UserError
    from darknet import Darknet, parse_cfg
    from shipping.deployed import open_deployed

    if args.model is None:
        if args.cfg is None or args.weights is None:
            raise UserError("give --cfg and --weights, or --model FILE (.onnx or .xml)")
        cfg = parse_cfg(args.cfg)
        cfg.require_heads("main.py eval")
        return Darknet(cfg, args.weights), args.img_size, args.device
    if args.cfg is not None or args.weights is not None:
        raise UserError("--model FILE replaces --cfg and --weights: give one or the other")
    if args.device == "cuda":
        raise UserError("--model runs the file on the CPU (onnxruntime or OpenVINO); "
                        "leave out --device cuda")
    backend, img_size = open_deployed(args.model, args.runtime, args.img_size)
    return backend, img_size, "cpu"
