"""Does pruning's GFLOPs cut reach CPU latency? Dense vs pruned, batch 1, same run.

    python bench/bench_latency.py [--ratio 0.5] [--runtime onnxruntime] [--runs 10] [--threads N]

For each (cfg, input size) case the cfg is built with random BN gammas (the channels a ratio
removes are then spread over every layer, as after sparse training they mostly are), pruned
with `prune_model` at `main.py prune`'s settings but ``--ratio`` and ``--round-to``, and both
models' eval forward (no NMS) are timed in turns on the same image after a warm-up, in one
inference form (``--runtime``, as ``main.py compare``; default onnxruntime, where a CPU user
runs the slim model); medians. Prints the GFLOPs ratio and the latency ratio side by side,
and their quotient.
Target (issue 5): latency ratio <= 1.2 x GFLOPs ratio.

A third model, the *floor*, is the same cfg cut to one channel per prunable layer: what is
left of its latency is per-op cost (dispatch, the fixed-width heads, the decode), a bound no
channel pruning of this cfg gets under. When the floor's own latency ratio is near the target,
the target cannot be met by channel pruning on this machine.

Cases: the demo cfg at its 128 px, where a forward is ~70 tiny convolutions and per-op
dispatch costs about as much as the arithmetic, and the full-size Res2Net-YOLOv3 cfgs at
320 px (res2net-yolov3 also at 416), where the arithmetic dominates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from comparison.compare import Timing, measure_latency  # noqa: E402
from darknet import Darknet  # noqa: E402
from darknet.cost import network_cost  # noqa: E402
from darknet.deploy import RUNTIMES, inference_model  # noqa: E402
from prune import PruneSettings, prune_model  # noqa: E402
from prune.importance import randomize_gammas  # noqa: E402

CASES = (("cfgs/demo.cfg", 128), ("cfgs/res2net-yolov3.cfg", 320),
         ("cfgs/res2net-yolov3.cfg", 416), ("cfgs/res2net-yolov3-triangle.cfg", 320))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=PruneSettings().ratio)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--round-to", type=int, default=PruneSettings().round_to,
                   help="prune's --round-to: kept channels per layer a multiple of this")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime",
                   help="inference form timed (darknet.deploy; default: onnxruntime)")
    p.add_argument("--only", default=None, help="run only the cfgs whose path contains this")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ratio {args.ratio}, "
          f"round-to {args.round_to}, {args.runtime} form")
    for cfg, size in CASES:
        if args.only and args.only not in cfg:
            continue
        dense = randomize_gammas(Darknet(ROOT / cfg), seed=0).eval()
        slim, _ = prune_model(dense, PruneSettings(ratio=args.ratio, round_to=args.round_to))
        floor, _ = prune_model(dense, PruneSettings(ratio=0.999, min_keep=1))
        image = torch.rand(1, 3, size, size)
        models = [inference_model(m, args.runtime, image) for m in (dense, slim, floor)]
        (t_dense, _), (t_slim, _), (t_floor, _) = measure_latency(
            models, image, Timing(args.runs, args.warmup))
        g_dense, g_slim = (network_cost(m.cfg, size, size).gflops for m in (dense, slim))
        g_ratio, l_ratio = g_slim / g_dense, t_slim / t_dense
        print(f"{cfg} @{size}: GFLOPs {g_dense:.3f} -> {g_slim:.3f} (x{g_ratio:.3f}); "
              f"latency {t_dense:.2f} -> {t_slim:.2f} ms (x{l_ratio:.3f}); "
              f"latency/GFLOPs ratio {l_ratio / g_ratio:.2f} (target <= 1.2); "
              f"floor {t_floor:.2f} ms (x{t_floor / t_dense:.3f})")


if __name__ == "__main__":
    main()
