"""Two gloo processes on the CPU: DistributedDataParallel steps keep the replicas equal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from helpers import ROOT

DEMO = ROOT / "cfgs" / "demo.cfg"

pytestmark = [pytest.mark.skipif(not torch.distributed.is_available(),
                                 reason="torch.distributed is not available"),
              pytest.mark.slow]  # processes that train for several steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, demo_data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from darknet import Darknet
    from engine.data import build_data
    from engine.distributed import cleanup_distributed, init_distributed
    from engine.trainer import TrainConfig, Trainer
    from yolodata import load_spec

    dist = init_distributed("cpu")
    try:
        torch.manual_seed(rank)  # different initial weights: DDP must start from rank 0's
        model = Darknet(DEMO)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        config = TrainConfig(epochs=1, batch_size=4, img_size=64, ema=False)
        trainer = Trainer(model, build_data(load_spec(demo_data), 64), config, out, dist=dist,
                          progress=False)
        trainer.fit()
        torch.save({"start": start, "end": {n: p.detach() for n, p in model.named_parameters()},
                    "steps": trainer.iteration},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        cleanup_distributed()


def test_two_gloo_processes_step_and_keep_replicas_equal(demo_data, tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(demo_data), str(tmp_path)), nprocs=2,
             join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["steps"] == r1["steps"] == 2  # 8 images, 2 per process per step
    changed = 0
    for name, p0 in r0["end"].items():
        torch.testing.assert_close(p0, r1["end"][name], rtol=0, atol=0, msg=name)
        changed += not torch.equal(p0, r0["start"][name])
    assert changed > 0.9 * len(r0["end"])
    # only rank 0 writes the run's files
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "results.json").is_file()


@pytest.mark.e2e
def test_torchrun_main_train(demo_data, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_port", str(free_port()), str(ROOT / "main.py"), "train",
         "--cfg", str(DEMO), "--data", str(demo_data), "--epochs", "1", "--img-size", "64",
         "--batch-size", "4", "--workers", "0", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: 1 epoch(s)") == 1  # rank 0 alone reports
    assert "2 process(es)" in proc.stdout
    assert (out / "best.weights").is_file() and (out / "last.pt").is_file()
