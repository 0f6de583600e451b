"""Time to analyze + select + cut + write the full Res2Net-YOLOv3, vs Torch-Pruning's graph.

    python bench/bench_prune.py [--cfg cfgs/res2net-yolov3.cfg] [--ratio 0.5] [--rounds 3]

Ours: the whole `prune_model` at `main.py prune`'s settings but --ratio (coupling analysis,
|gamma| / multiply-adds scores, selection, surgery with folding, the cost report) plus
`write_pruned` (cfg, weights, report) on a loaded model with random gammas; the dense
weights' load is not included. Reference, in the same run:
Torch-Pruning's `DependencyGraph.build_dependency` on the split-free copy
(`tests/split_free.py`; it cannot trace the split itself), traced with a 64 px input, and the
same plus `get_pruning_group` for every conv (what it takes to know all couplings, as our
analysis does). Median of --rounds, alternating, so machine load hits both alike.
Goals: ours under 3 s on CPU (issue 4); the coupling analysis alone of the full cfg under 2 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the split-free oracle copy lives with the tests

import torch  # noqa: E402
import torch_pruning as tp  # noqa: E402
from split_free import SplitFreeDarknet  # noqa: E402

from darknet import Darknet  # noqa: E402
from prune import PruneSettings, analyze, prune_model, write_pruned  # noqa: E402
from prune.importance import class_scores, randomize_gammas  # noqa: E402
from prune.select import select_channels  # noqa: E402
from prune.surgery import cut_model  # noqa: E402


def ours(model: Darknet, settings: PruneSettings, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    analysis = analyze(model.cfg)
    structure = analysis.structure(settings.scope)
    t1 = time.perf_counter()
    scores = class_scores(analysis, model, settings.flops_exponent)
    plan = select_channels(structure, scores, settings)
    t2 = time.perf_counter()
    cut_model(model, analysis, plan)
    t3 = time.perf_counter()
    slim, report = prune_model(model, settings)  # the whole pipeline again, as the CLI runs it
    t4 = time.perf_counter()
    write_pruned(slim, report, out)
    t5 = time.perf_counter()
    return {"analyze": t1 - t0, "select": t2 - t1, "cut": t3 - t2, "pipeline": t4 - t3,
            "write": t5 - t4, "total": (t4 - t3) + (t5 - t4)}


def torch_pruning(model: Darknet) -> dict[str, float]:
    free = SplitFreeDarknet(model).eval()
    x = torch.randn(1, model.cfg.net.channels, 64, 64)
    t0 = time.perf_counter()
    dg = tp.DependencyGraph().build_dependency(free, x, verbose=False)
    t1 = time.perf_counter()
    for conv in [m for m in free.modules() if isinstance(m, torch.nn.Conv2d)]:
        dg.get_pruning_group(conv, tp.prune_conv_out_channels, list(range(conv.out_channels)))
    t2 = time.perf_counter()
    return {"build": t1 - t0, "build+groups": t2 - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="cfgs/res2net-yolov3.cfg")
    p.add_argument("--ratio", type=float, default=PruneSettings().ratio)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    settings = PruneSettings(ratio=args.ratio)
    model = randomize_gammas(Darknet(args.cfg).eval(), 0)
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, t in ours(model, settings, Path(tmp) / f"r{r}").items():
                runs.setdefault(f"ours {name}", []).append(t)
            for name, t in torch_pruning(model).items():
                runs.setdefault(f"torch-pruning {name}", []).append(t)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"{args.cfg} (net {model.cfg.net.width}x{model.cfg.net.height}), ratio "
          f"{args.ratio}, CPU threads {torch.get_num_threads()}, median of {args.rounds}:")
    for k, v in med.items():
        print(f"  {k:<32}{v:8.3f} s")
    total, analysis = med["ours total"], med["ours analyze"]
    build, groups = med["torch-pruning build"], med["torch-pruning build+groups"]
    print(f"ours analyze+select+cut+write {total:.2f} s; torch-pruning graph build {build:.2f} s "
          f"(build / ours = {build / total:.2f})")
    print(f"couplings alone: ours {analysis:.3f} s vs torch-pruning build {build:.3f} s "
          f"({build / analysis:.0f}x), build + every group {groups:.3f} s "
          f"({groups / analysis:.0f}x)")
    print(f"goal < 3 s: {'met' if total < 3 else 'NOT met'}; "
          f"goal analyze < 2 s: {'met' if analysis < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
