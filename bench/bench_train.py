"""Training throughput: the demo cfg end to end, and our Res2Net block against the seed's.

    python bench/bench_train.py                 # demo images/s + block comparison (~1-2 min)
    python bench/bench_train.py --full          # also the default `main.py train` run (~10 min)

1. Demo training images/s: cfgs/demo.cfg with the defaults of `main.py train` (128 px,
   batch 8, AdamW, EMA on, loading in the main process) over one epoch of generated images
   (evaluation not counted), median of --rounds epochs.
2. Block: darknet.blocks.Bottle2neck against tests/seed_reference.SeedBottle2neck with the
   same weights and input, forward + backward (training mode), alternating A B A B so machine
   load hits both alike; prints each median and the ratio (ours must not be slower: <= 1).
3. With --full: runs `main.py train` with its defaults into a temporary folder and prints the
   dense demo mAP it reaches, with wall time and images/s as the command printed them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from seed_reference import SeedBottle2neck  # noqa: E402

from commands.train import DEFAULTS as TRAIN  # noqa: E402
from darknet import Darknet  # noqa: E402
from darknet.blocks import Bottle2neck  # noqa: E402
from engine.data import build_data  # noqa: E402
from engine.loss import init_detection_biases  # noqa: E402
from engine.trainer import TrainConfig, Trainer  # noqa: E402
from yolodata import ensure_demo_dataset, load_spec  # noqa: E402

# (batch, channels, size): demo stage 2 at 128 px, and a full-size stage 3 at 416 px / 4.
BLOCK_CASES = ((16, 64, 16), (8, 256, 26))


def demo_rate(data, out: Path, workers: int) -> float:
    torch.manual_seed(0)
    model = Darknet(ROOT / "cfgs" / "demo.cfg")
    init_detection_biases(model, 128)
    config = TrainConfig(epochs=1, batch_size=TRAIN["batch_size"], img_size=TRAIN["img_size"],
                         optimizer=TRAIN["optimizer"], lr0=TRAIN["lr"], ema=True,
                         eval_interval=10)
    trainer = Trainer(model, data, config, out, workers=workers, progress=False)
    return trainer.fit()[-1]["images_per_s"]


def block_step_seconds(block: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    block.train()
    for _ in range(2):  # warm-up
        block(x).sum().backward()
    start = time.perf_counter()
    for _ in range(steps):
        block.zero_grad(set_to_none=True)
        block(x).sum().backward()
    return (time.perf_counter() - start) / steps


def compare_blocks(rounds: int, steps: int) -> None:
    for batch, channels, size in BLOCK_CASES:
        planes = channels // 2
        width = planes * 26 // 64
        ours = Bottle2neck(channels, width, 4)
        seed = SeedBottle2neck(channels, planes, base_width=26, scale=4)
        seed.load_state_dict(ours.state_dict())
        x = torch.randn(batch, channels, size, size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x.clone()), seed(x.clone()))
        a, b = [], []
        for _ in range(rounds):
            a.append(block_step_seconds(ours, x, steps))
            b.append(block_step_seconds(seed, x, steps))
        ta, tb = statistics.median(a), statistics.median(b)
        print(f"Bottle2neck {channels}ch width {width} x4 @{size}x{size} batch {batch}: "
              f"ours {batch / ta:8.1f} img/s, seed {batch / tb:8.1f} img/s, "
              f"time ours/seed {ta / tb:.3f} (must be <= 1)")


def full_run() -> None:
    import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "train"
        start = time.perf_counter()
        rc = main.main(["train", "--out", str(out), "--no-progress"])
        wall = time.perf_counter() - start
        if rc:
            raise SystemExit(rc)
        results = json.loads((out / "results.json").read_text())
        last = results["epochs"][-1]
        print(f"dense demo: last epoch mAP@.5 {last['map50']:.4f} mAP@.5:.95 {last['map']:.4f}; "
              f"best (epoch {results['best_epoch']}) mAP@.5 {results['best_map50']:.4f} "
              f"mAP@.5:.95 {results['best_map']:.4f}; wall {wall / 60:.1f} min")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=320, help="images per demo epoch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--block-steps", type=int, default=10)
    p.add_argument("--full", action="store_true",
                   help="also run the default `main.py train` (about 10 minutes) for its mAP")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    compare_blocks(args.rounds, args.block_steps)
    with tempfile.TemporaryDirectory() as tmp:
        yaml = ensure_demo_dataset(root=Path(tmp) / "demo", n_train=args.images, n_val=16,
                                   img_size=160, seed=1)
        data = build_data(load_spec(yaml), 128)
        rates = [demo_rate(data, Path(tmp) / f"run{r}", args.workers) for r in range(args.rounds)]
    print(f"demo training: {statistics.median(rates):.1f} images/s "
          f"(runs: {', '.join(f'{v:.1f}' for v in rates)}; cfgs/demo.cfg, 128 px, "
          f"batch {TRAIN['batch_size']})")
    if args.full:
        full_run()


if __name__ == "__main__":
    main()
