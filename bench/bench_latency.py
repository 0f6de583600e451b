"""Does pruning's GFLOPs cut reach CPU latency? Dense vs pruned, batch 1, ratios in one run.

    python bench/bench_latency.py [--threads 2] [--runs 10] [--part all] [--only CFG]

Every model is built with random BN gammas (the channels a ratio removes are then spread over
every layer, as after sparse training they mostly are) and timed at batch 1 on one random
image, in turns with the models it is compared with (so background load hits them alike),
after a warm-up; medians, NMS excluded. Three parts (``--part``, default all):

``sweep`` (issue 12, point 2): ``--round-to`` 1, 4, 8, 16 (``--round-to-values``) at
``--ratio 0.5`` on the demo cfg at 128 px and the full-size Res2Net cfgs at 320 and 416 px,
timed in onnxruntime and in folded PyTorch: per value the GFLOPs ratio beside each runtime's
latency ratio, and their quotient. A *floor* model (one channel per prunable layer) shows the
per-op cost no channel pruning removes.

``ranking`` (point 4): res2net-yolov3 at 416 px, ``--target-gflops 0.3x`` with the gamma
ranking and with the latency ranking (the latency table filled first, not timed): each one's
GFLOPs ratio and onnxruntime latency ratio, dense and both slim models timed in one run.

``targets``: the issue's lines. res2net-yolov3 @416, GFLOPs to 0.3x, onnxruntime: latency
ratio <= 1.1 x GFLOPs ratio (from the ranking part's models); and the wall time of a budgeted
prune of that cfg (``prune_model`` with ``--target-gflops 0.3x --layers auto``, both
rankings, the latency table already measured) <= 10 s, beside the one-off time the table
took to fill on this machine, and the same prune as one ``main.py prune`` command (Python
start, model build with random gammas, search, cut, files written).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from darknet import Darknet  # noqa: E402
from darknet.cost import network_cost  # noqa: E402
from prune import PruneSettings, prune_model  # noqa: E402
from prune.importance import randomize_gammas  # noqa: E402
from prune.op_timing import ort_context  # noqa: E402
from shipping.backends import model_backend  # noqa: E402
from shipping.timing import Timing, measure_latency  # noqa: E402

SWEEP = (("cfgs/demo.cfg", 128), ("cfgs/res2net-yolov3.cfg", 320),
         ("cfgs/res2net-yolov3.cfg", 416), ("cfgs/res2net-yolov3-triangle.cfg", 320),
         ("cfgs/res2net-yolov3-triangle.cfg", 416))
RUNTIMES = ("onnxruntime", "folded")
TARGET_CFG, TARGET_SIZE, TARGET_GFLOPS = "cfgs/res2net-yolov3.cfg", 416, "0.3x"
LATENCY_QUOTIENT, PRUNE_SECONDS = 1.1, 10.0  # the targets


@dataclass
class Bench:
    timing: Timing
    only: str | None

    def dense(self, cfg: str) -> Darknet:
        return randomize_gammas(Darknet(ROOT / cfg), seed=0).eval()

    def latencies(self, models: list[Darknet], size: int, runtime: str) -> list[float]:
        image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        forms = [model_backend(m, runtime, image) for m in models]
        return [t for t, _ in measure_latency(forms, image, self.timing, nms=False)]


def gflops(model: Darknet, size: int) -> float:
    return network_cost(model.cfg, size, size).gflops


def sweep(bench: Bench, ratio: float, values: list[int]) -> None:
    print(f"\n== --round-to sweep: random gammas, --ratio {ratio}, latency ratio beside GFLOPs "
          "ratio ==")
    for cfg, size in SWEEP:
        if bench.only and bench.only not in cfg:
            continue
        dense = bench.dense(cfg)
        slims = [prune_model(dense, PruneSettings(ratio=ratio, round_to=n), size)[0]
                 for n in values]
        floor, _ = prune_model(dense, PruneSettings(ratio=0.999, min_keep=1), size)
        models = [dense, *slims, floor]
        times = {rt: bench.latencies(models, size, rt) for rt in RUNTIMES}
        g_dense = gflops(dense, size)
        print(f"{cfg} @{size}: dense {g_dense:.3f} GFLOPs, "
              + ", ".join(f"{rt} {times[rt][0]:.2f} ms" for rt in RUNTIMES))
        for k, n in enumerate(values, start=1):
            g = gflops(models[k], size) / g_dense
            cells = [f"{rt} latency x{times[rt][k] / times[rt][0]:.3f} "
                     f"({times[rt][k] / times[rt][0] / g:.2f} of GFLOPs)" for rt in RUNTIMES]
            print(f"    --round-to {n:<3} GFLOPs x{g:.3f}   " + "   ".join(cells))
        print("    floor         " + "   ".join(
            f"{rt} latency x{times[rt][-1] / times[rt][0]:.3f}" for rt in RUNTIMES))


def budgeted(dense: Darknet, ranking: str, latency, layers: int | str = 0):
    settings = PruneSettings(target_gflops=TARGET_GFLOPS, ranking=ranking, layers=layers)
    start = time.perf_counter()
    slim, report = prune_model(dense, settings, TARGET_SIZE, latency=latency)
    return slim, report, time.perf_counter() - start


def ranking_and_targets(bench: Bench, parts: set[str]) -> None:
    dense = bench.dense(TARGET_CFG)
    latency = ort_context(TARGET_SIZE)
    start = time.perf_counter()
    budgeted(dense, "latency", latency)  # fills the table: the one-off measurement
    budgeted(dense, "latency", latency, "auto")
    fill_s, measured = time.perf_counter() - start, latency.table.measured
    rankings = {r: budgeted(dense, r, latency) for r in ("gamma", "latency")}
    times = bench.latencies([dense, *(s for s, _, _ in rankings.values())], TARGET_SIZE,
                            "onnxruntime")
    ratios = {}
    print(f"\n== {TARGET_CFG} @{TARGET_SIZE}, random gammas, --target-gflops {TARGET_GFLOPS}, "
          f"onnxruntime (dense {times[0]:.2f} ms) ==")
    for k, (name, (_, report, _)) in enumerate(rankings.items(), start=1):
        g, lat = report.gflops_after / report.gflops_before, times[k] / times[0]
        ratios[name] = (g, lat)
        if "ranking" in parts:
            print(f"    --ranking {name:<8} --ratio {report.settings.ratio:.2f}: GFLOPs x{g:.3f}, "
                  f"params x{report.params_after / report.params_before:.3f}, latency "
                  f"x{lat:.3f} ({times[k]:.2f} ms), latency/GFLOPs {lat / g:.2f}")
    if "targets" not in parts:
        return
    print("\n== targets (issue 12) ==")
    for name, (g, lat) in ratios.items():
        print(f"res2net-yolov3 @416, random gammas, GFLOPs x{g:.3f} (--target-gflops 0.3x, "
              f"--ranking {name}): onnxruntime latency x{lat:.3f}, {lat / g:.2f} x the GFLOPs "
              f"ratio (target <= {LATENCY_QUOTIENT})")
    for name in ("gamma", "latency"):
        for layers in (0, "auto"):
            _, report, seconds = budgeted(dense, name, latency, layers)
            print(f"budgeted prune of {TARGET_CFG} @{TARGET_SIZE} (--target-gflops 0.3x "
                  f"--layers {layers} --ranking {name}; {len(report.search.steps)} plans): "
                  f"{seconds:.2f} s (target <= {PRUNE_SECONDS:g} s)")
    print(f"    one-off latency table fill for these searches: {fill_s:.1f} s, "
          f"{measured} shapes measured (cached: {latency.table.path})")
    seconds = whole_command()
    print(f"budgeted prune, the whole command (python main.py prune --cfg {TARGET_CFG} "
          f"--random-gammas 0 --img-size {TARGET_SIZE} --target-gflops {TARGET_GFLOPS} --layers "
          f"auto: start, build, search, cut, write): {seconds:.2f} s (target <= "
          f"{PRUNE_SECONDS:g} s)")


def whole_command() -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "main.py"), "prune", "--cfg",
                        str(ROOT / TARGET_CFG), "--random-gammas", "0", "--img-size",
                        str(TARGET_SIZE), "--target-gflops", TARGET_GFLOPS, "--layers", "auto",
                        "--out", out], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.5, help="the sweep's --ratio")
    p.add_argument("--round-to-values", default="1,4,8,16",
                   help="the sweep's --round-to values, comma-separated")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    p.add_argument("--part", choices=("all", "sweep", "ranking", "targets"), default="all")
    p.add_argument("--only", default=None, help="sweep only the cfgs whose path contains this")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bench = Bench(Timing(args.runs, args.warmup), args.only)
    parts = {"sweep", "ranking", "targets"} if args.part == "all" else {args.part}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, median of "
          f"{args.runs} after {args.warmup} warm-up runs")
    if "sweep" in parts:
        sweep(bench, args.ratio, [int(v) for v in args.round_to_values.split(",")])
    if parts & {"ranking", "targets"}:
        ranking_and_targets(bench, parts)


if __name__ == "__main__":
    main()
