"""Step-time cost of the sparsity penalty: the same training epochs with and without it.

    python bench/bench_sparse.py [--images 160] [--rounds 3]

Trains cfgs/demo.cfg at 128 px on a small generated set, alternating plain and sparse epochs
(A B A B ...) so machine load hits both alike, and prints the median images/s of each and
their ratio. Target (issue 5): sparse within 5% of plain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from darknet import Darknet  # noqa: E402
from engine.data import build_data  # noqa: E402
from engine.trainer import TrainConfig, Trainer  # noqa: E402
from sparsity.hook import SparsityHook  # noqa: E402
from sparsity.penalty import SparsitySchedule  # noqa: E402
from yolodata import ensure_demo_dataset, load_spec  # noqa: E402


def epoch_rate(data, hooks, out: Path) -> float:
    torch.manual_seed(0)
    model = Darknet("cfgs/demo.cfg")
    config = TrainConfig(epochs=1, batch_size=8, img_size=128, ema=True)  # sparse defaults
    trainer = Trainer(model, data, config, out, hooks=hooks, progress=False)
    return trainer.fit()[-1]["images_per_s"]  # training throughput; evaluation not counted


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        yaml = ensure_demo_dataset(root=Path(tmp) / "demo", n_train=args.images, n_val=16,
                                   img_size=160, seed=1)
        data = build_data(load_spec(yaml), 128)
        plain, sparse = [], []
        for r in range(args.rounds):
            plain.append(epoch_rate(data, [], Path(tmp) / f"plain{r}"))
            hook = SparsityHook(SparsitySchedule(0.005))
            sparse.append(epoch_rate(data, [hook], Path(tmp) / f"sparse{r}"))
    a, b = statistics.median(plain), statistics.median(sparse)
    print(f"plain training : {a:7.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in plain)})")
    print(f"sparse training: {b:7.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in sparse)})")
    print(f"sparse / plain step time: {a / b:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
