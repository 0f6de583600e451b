"""`main.py eval`: COCO mAP of Darknet weights on a dataset's val split."""

from __future__ import annotations

import argparse
import json

HELP = "mAP@.5 and mAP@.5:.95 of a cfg + weights on a dataset's val split"
DESCRIPTION = """Run the detector over the val split (letterboxed to --img-size, batched), keep
detections with score > --conf-thres after class-aware NMS at --iou-thres, and compute
COCO-standard mAP@.5 and mAP@.5:.95 (pycocotools, boxes mapped back to original image pixels)
with a per-class breakdown.

examples:
  python main.py eval --cfg cfgs/demo.cfg --weights runs/train/best.weights
  python main.py eval --cfg my.cfg --weights my.weights --data coco.yaml --img-size 416 --json"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cfg", required=True, help="Darknet .cfg")
    p.add_argument("--weights", required=True, help="Darknet .weights")
    p.add_argument("--data", default="demo",
                   help="data .yaml, Darknet .data file or 'demo' (default: demo)")
    p.add_argument("--img-size", type=int, default=None,
                   help="square input size, a multiple of 32 (default: the cfg's [net] height)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    p.add_argument("--conf-thres", type=float, default=0.001,
                   help="minimum score (objectness x class probability) (default: 0.001)")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold (default: 0.6)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader processes (default: 0 on CPU, up to 8 with CUDA)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: map50, map, per_class, images, seconds")


def run(args: argparse.Namespace) -> int:
    from commands import check_img_size
    from darknet import Darknet, parse_cfg
    from engine.data import skipped_summary
    from engine.evaluator import evaluate
    from evaluation import format_map_table

    check_img_size(args.img_size)
    cfg = parse_cfg(args.cfg)
    cfg.require_heads("main.py eval")
    model = Darknet(cfg, args.weights)
    result = evaluate(model, args.data, args.img_size, args.batch_size, args.conf_thres,
                      args.iou_thres, args.device, args.workers)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(format_map_table(result.coco))
        print(f"{result.images} images at {result.img_size} px in {result.seconds:.1f}s")
        if result.skipped:
            print(skipped_summary(result.skipped))
    return 0
