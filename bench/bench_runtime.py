"""Where should a CPU user run the model? One model timed in every inference form, same run.

    python bench/bench_runtime.py [--cfg cfgs/demo.cfg] [--img-size N] [--runs 30] [--threads N]

The model (random weights; latency does not depend on their values) is timed at batch 1 in
each form of ``shipping.backends.RUNTIMES`` (eager, BN folded, TorchScript, onnxruntime), in
turns on the same image after a warm-up, NMS excluded; medians, and each form's ratio to the
folded PyTorch form (what ``main.py compare --runtime folded`` times).
Target (issue 11): dense demo model, onnxruntime <= 0.5 x folded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from darknet import Darknet  # noqa: E402
from shipping.backends import RUNTIMES, model_backend  # noqa: E402
from shipping.timing import Timing, measure_latency  # noqa: E402

TARGET = 0.5  # onnxruntime / folded on the dense demo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default=str(ROOT / "cfgs" / "demo.cfg"))
    p.add_argument("--img-size", type=int, default=None, help="default: the cfg's [net] height")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = Darknet(args.cfg).eval()
    size = args.img_size or model.cfg.net.height
    image = torch.rand(1, model.cfg.net.channels, size, size)
    forms = [model_backend(model, runtime, image) for runtime in RUNTIMES]
    times = [t for t, _ in measure_latency(forms, image, Timing(args.runs, args.warmup))]
    folded = times[RUNTIMES.index("folded")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.cfg} @{size}, "
          f"batch 1, median of {args.runs}")
    for runtime, t in zip(RUNTIMES, times, strict=True):
        print(f"  {runtime:<12} {t:8.2f} ms  x{t / folded:.3f} of folded")
    ratio = times[RUNTIMES.index("onnxruntime")] / folded
    print(f"onnxruntime / folded PyTorch: {ratio:.3f} (target <= {TARGET} on the dense demo)")


if __name__ == "__main__":
    main()
