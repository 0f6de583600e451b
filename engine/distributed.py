"""Process-group setup for ``torchrun``, and the few collectives the engine needs.

``torchrun --nproc_per_node=N main.py train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; ``init_distributed`` reads them and joins the group (NCCL when each process
drives a CUDA device, gloo on CPU). Without them everything runs as a single process and
every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from common.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` and the device it drives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (this process's local GPU) or None (CUDA when available)."""
    if name not in (None, "", "cpu", "cuda") and not str(name).startswith("cuda:"):
        raise UserError(f"--device must be cpu or cuda, got {name!r}")
    if name in (None, "") :
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda requested but no CUDA device is available")
        index = int(str(name).split(":")[1]) if ":" in str(name) else local_rank
        if index >= torch.cuda.device_count():
            raise UserError(f"CUDA device {index} requested, {torch.cuda.device_count()} present")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers(info: DistInfo) -> int:
    """Loader processes when the user names none: on CPU none (the main process loads the
    next batch itself; a worker would only take cores from the compute threads, and the
    demo loads at ~600 images/s against ~50 trained), on CUDA up to 8 per process."""
    if info.device.type == "cpu":
        return 0
    return max(1, min(8, _cores() // info.world_size - 1))


def set_cpu_threads(info: DistInfo, workers: int) -> int | None:
    """On CPU, give torch the cores left over by sibling processes and loader workers.

    torch defaults to one thread per core even when a loader worker or another rank shares
    them, and oversubscribed CPU kernels spin instead of working: on 2 cores, 2 threads
    beside one loader worker evaluated the demo at 8 images/s instead of 200. An explicit
    ``OMP_NUM_THREADS`` (torchrun sets one) wins. Returns the thread count set, or None.
    """
    if info.device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = max(1, _cores() // info.world_size - workers)
    torch.set_num_threads(threads)
    return threads


def loader_workers(info: DistInfo, workers: int | None) -> int:
    """``workers`` (None: ``default_workers``), after setting torch's CPU threads around them."""
    if workers is None:
        workers = default_workers(info)
    set_cpu_threads(info, workers)
    return workers


def distribute(model: nn.Module, info: DistInfo) -> nn.Module:
    """What the training step calls: ``model`` itself, or under ``torchrun`` its
    ``DistributedDataParallel`` wrapper (with SyncBatchNorm on CUDA; torch's SyncBatchNorm has
    no CPU kernel). The BatchNorms are converted in place, so take any copy (EMA) first."""
    if not info.enabled:
        return model
    if info.device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(
        model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every process (one tiny all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return t.item() == 0.0


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s Python object on every process."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]
