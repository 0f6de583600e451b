"""`main.py info`: what a cfg builds, layer by layer, with parameters and GFLOPs."""

import json

HELP = "show a cfg's layers, parameters, GFLOPs and YOLO output shapes"
DESCRIPTION = """Build the network described by a Darknet .cfg and print one row per layer
(index, type, input -> output channels, output size, parameters) and the totals. GFLOPs are
2 x multiply-adds / 1e9 for one image at --img-size: convolutions and BatchNorm, counted
from the layer shapes as thop counts them.

example:
  python main.py info --cfg cfgs/res2net-yolov3.cfg --img-size 416
  python main.py info --cfg cfgs/demo.cfg --json"""


def add_arguments(p):
    p.add_argument("--cfg", required=True, help="Darknet .cfg file")
    p.add_argument("--img-size", type=int, default=None,
                   help="square input size in pixels (default: the cfg's [net] height)")
    p.add_argument("--weights", default=None,
                   help="Darknet .weights to load (checks that they fit the cfg)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (params, gflops, outputs, layers) instead")


def run(args) -> int:
    from common.errors import UserError
    from darknet import Darknet
    from darknet.summary import summarize

    if args.img_size is not None and (args.img_size < 32 or args.img_size % 32):
        raise UserError(f"--img-size must be a positive multiple of 32, got {args.img_size}")
    model = Darknet(args.cfg)
    if args.weights:
        model.load_weights(args.weights)
    summary = summarize(model.cfg, args.img_size)
    if args.json:
        print(json.dumps({"cfg": args.cfg, **summary.as_dict()}))
    else:
        print(summary.table())
    return 0
