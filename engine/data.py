"""Datasets and loaders for the engine: a ``DataSpec`` -> checked train/val datasets, and
loaders whose order and augmentation are a function of ``(seed, epoch, rank)``.

Reproducible epochs are what make ``--resume`` exact: the sampler is a
``DistributedSampler`` (also with one process: it shuffles by ``seed + epoch``), and the
loader's generator, which seeds the worker processes' augmentation, is re-seeded at the start
of every epoch (``set_epoch``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from yolodata import AugmentConfig, DataSpec, YoloDataset, check_split, collate


@dataclass(frozen=True)
class DetectionData:
    """What the engine needs from a dataset description."""

    train: YoloDataset
    val: YoloDataset
    names: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (image, reason) of unreadable images left out


def build_data(spec: DataSpec, img_size: int, augment: AugmentConfig | None = None,
               train: bool = True) -> DetectionData:
    """Check every label file and image header first (bad data fails before epoch 1)."""
    skipped = []
    val_check = check_split(spec.val, spec.num_classes, "val")
    skipped += val_check.skipped
    val = YoloDataset(val_check.images, spec.num_classes, img_size, augment=False)
    if train:
        train_check = check_split(spec.train, spec.num_classes, "train")
        skipped += train_check.skipped
        train_set = YoloDataset(train_check.images, spec.num_classes, img_size, augment=True,
                                hyp=augment)
    else:
        train_set = val
    return DetectionData(train_set, val, spec.names,
                         tuple((str(p), why) for p, why in skipped))


class EpochLoader:
    """A ``DataLoader`` over one process's share of ``dataset``, reproducible per epoch."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, workers: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 pin_memory: bool = False):
        self.seed, self.rank = seed, rank
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                          shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers,
            collate_fn=collate, drop_last=drop_last, pin_memory=pin_memory,
            generator=self.generator, persistent_workers=False,
        )
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(self.seed * 1_000_003 + epoch * 1009 + self.rank)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)
