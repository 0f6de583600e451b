"""`main.py partial`: cut a model's weights after N layers (Darknet's `partial` command)."""

HELP = "write the first N layers of a model's weights (a backbone to start training from)"
DESCRIPTION = """Load --weights into --cfg (the whole model, checked), then write the header and
the weights of layers 0..N-1 to --out, as `darknet partial cfg weights out N` does
(save_weights_upto): darknet53.conv.74 is yolov3's first 74 layers. The header's `seen` count
is reset to 0, as Darknet's partial resets it. Train from the file with --weights F --cutoff N,
or name it *.conv.N and the cutoff is read from the name.

example:
  python main.py partial --cfg cfgs/demo.cfg --weights runs/train/best.weights --cutoff 20 \\
      --out backbone.conv.20
  python main.py train --cfg cfgs/demo.cfg --weights backbone.conv.20"""


def add_arguments(p):
    p.add_argument("--cfg", required=True, help="Darknet .cfg the weights were made for")
    p.add_argument("--weights", required=True, help="the whole model's Darknet .weights")
    p.add_argument("--cutoff", type=int, required=True, metavar="N",
                   help="keep layers 0..N-1 (cfg order, every section counted)")
    p.add_argument("--out", required=True,
                   help="output file; name it *.conv.N so training reads the cutoff")


def run(args) -> int:
    from dataclasses import replace

    from common.errors import UserError
    from darknet import Darknet
    from darknet.transfer import cutoff_from_name

    model = Darknet(args.cfg)
    n = len(model.layers)
    if not 0 < args.cutoff <= n:
        raise UserError(f"--cutoff must be in 1..{n} ({args.cfg} has {n} layers), "
                        f"got {args.cutoff}")
    named = cutoff_from_name(args.out)
    if named is not None and named != args.cutoff:
        raise UserError(f"--out {args.out} names cutoff {named} but --cutoff is {args.cutoff}; "
                        "training would read the cutoff from the name")
    model.load_weights(args.weights)
    model.save_weights(args.out, replace(model.header, seen=0), cutoff=args.cutoff)
    weighted = [i for i, layer in enumerate(model.layers) if layer.conv_bn_pairs()]
    kept = sum(1 for i in weighted if i < args.cutoff)
    print(f"wrote {args.out}: layers 0-{args.cutoff - 1} of {args.cfg} ({kept} of "
          f"{len(weighted)} layers with weights)")
    return 0
