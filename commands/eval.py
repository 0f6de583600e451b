"""`main.py eval`: COCO mAP of Darknet weights on a dataset's val split."""

from __future__ import annotations

import argparse
import json
import time

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
    from common.errors import UserError
    from darknet import Darknet, parse_cfg
    from engine.data import EpochLoader, build_data, skipped_summary
    from engine.distributed import DistInfo, loader_workers, select_device
    from engine.evaluator import evaluate
    from evaluation import format_map_table
    from yolodata import load_spec

    check_img_size(args.img_size)
    if args.batch_size < 1 or (args.workers or 0) < 0:
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    if not 0 <= args.conf_thres < 1 or not 0 <= args.iou_thres <= 1:
        raise UserError("--conf-thres must be in [0, 1) and --iou-thres in [0, 1]")
    device = select_device(args.device)
    args.workers = loader_workers(DistInfo(device=device), args.workers)
    cfg = parse_cfg(args.cfg)
    cfg.require_heads("main.py eval")
    model = Darknet(cfg)
    model.load_weights(args.weights)
    img_size = args.img_size or model.cfg.net.height
    spec = load_spec(args.data)
    if spec.num_classes != model.num_classes:
        raise UserError(f"{spec.source}: {spec.num_classes} class names but {args.cfg} has "
                        f"classes={model.num_classes}")
    data = build_data(spec, img_size, train=False)
    loader = EpochLoader(data.val, args.batch_size, shuffle=False, workers=args.workers)
    start = time.perf_counter()
    result = evaluate(model.to(device), loader, spec.names, device, args.conf_thres,
                      args.iou_thres, amp=device.type == "cuda")
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({
            "map50": result.map50, "map": result.map,
            "per_class": {name: {"ap50": c.ap50, "ap": c.ap, "n_gt": c.n_gt}
                          for name, c in result.per_class.items()},
            "images": len(data.val), "skipped": len(data.skipped), "img_size": img_size,
            "seconds": seconds,
        }))
    else:
        print(format_map_table(result))
        print(f"{len(data.val)} images at {img_size} px in {seconds:.1f}s")
        if data.skipped:
            print(skipped_summary(data.skipped))
    return 0
