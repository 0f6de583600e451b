"""`main.py compare`: pruned vs dense in one table."""

from __future__ import annotations

HELP = "compare models: mAP, params, GFLOPs, CPU latency, file size, ratios to the first"
DESCRIPTION = """Evaluate every --model on the same val split and time them in the same run.
One row per model: mAP@.5, mAP@.5:.95, parameters, GFLOPs, CPU latency at batch 1 (median of
--runs passes after warm-up, every model in the same --runtime form; NMS excluded and reported
separately, at score > 0.25), the .weights file size, and ratios to the first model (put the
dense one first).
A --model NAME=FILE row is an exported file (main.py export: .onnx FP32 or INT8, or an
OpenVINO .xml) measured as it ships: its mAP is what the file scores, its latency is the
file's in its runtime (an .onnx in --runtime when that is onnxruntime or openvino, else in
onnxruntime; an .xml in OpenVINO; the table's runtime column says), its size is the file's
(.xml + .bin), and its params and GFLOPs are counted from its graph's convolutions, where
BatchNorm is folded in (a few tenths of a percent below its cfg's count).
With --out, writes compare.md, compare.json and compare.png (mAP@.5 and mAP@.5:.95
against GFLOPs and against latency, the first model as reference lines).

example:
  python main.py compare --model dense=cfgs/demo.cfg,runs/train/best.weights \\
      --model pruned=runs/prune/pruned.cfg,runs/finetune/best.weights --out runs/compare
  python main.py compare --model dense=cfgs/demo.cfg,runs/train/best.weights \
      --model int8=runs/export/pruned-int8.onnx --model openvino=runs/export/pruned.xml"""


# shipping.backends.RUNTIMES, spelled here so that --help imports no torch (a test checks).
RUNTIMES = ("eager", "folded", "torchscript", "onnxruntime", "openvino")


def add_arguments(p) -> None:
    p.add_argument("--model", action="append", required=True, metavar="NAME=CFG,WEIGHTS|NAME=FILE",
                   help="a model to compare, or an exported .onnx / .xml; repeat it, the "
                        "first is the reference")
    p.add_argument("--data", default="demo",
                   help="data .yaml, Darknet .data file or 'demo' (default: demo)")
    p.add_argument("--img-size", type=int, default=None,
                   help="square input size (default: the first cfg's [net] height, or the "
                        "first file's input size)")
    p.add_argument("--batch-size", type=int, default=32, help="eval batch size (default: 32)")
    p.add_argument("--runs", type=int, default=30,
                   help="timed forward passes per model (default: 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed passes first (default: 5)")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime",
                   help="the form timed: eager (the training model), folded (BN folded into "
                        "the convs), torchscript (folded, traced and frozen: no Python in the "
                        "forward), onnxruntime (folded, exported to ONNX and run in "
                        "onnxruntime with torch's thread count and spin-waiting off, where a "
                        "CPU user deploys it; default) or openvino (the same ONNX graph in "
                        "OpenVINO, INFERENCE_NUM_THREADS = torch's threads; needs "
                        "requirements-openvino.txt)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader processes (default: 0; models run on the CPU)")
    p.add_argument("--out", default=None, help="directory for compare.md/.json/.png")


def run(args) -> int:
    from commands import check_img_size
    from common.errors import UserError
    from common.io import ensure_writable_dir
    from comparison.compare import ModelSpec, Timing, compare, load_models
    from engine.data import skipped_summary

    if (args.workers or 0) < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if args.runs < 1 or args.warmup < 0:
        raise UserError(f"--runs must be >= 1 and --warmup >= 0, got {args.runs}, {args.warmup}")
    check_img_size(args.img_size)
    if args.out:
        ensure_writable_dir(args.out, create=False)  # before the evaluation, not after
    models = load_models([ModelSpec.parse(m) for m in args.model])
    result = compare(models, args.data, args.runtime, args.img_size, args.batch_size,
                     Timing(args.runs, args.warmup), args.workers or 0)
    print(result.markdown, end="")
    if result.skipped:
        print(skipped_summary(result.skipped))
    if args.out:
        paths = result.write(args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
