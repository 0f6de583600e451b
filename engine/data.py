"""Datasets and loaders for the engine: a ``DataSpec`` -> checked train/val datasets, and
loaders whose order and augmentation are a function of ``(seed, epoch, rank)``.

Reproducible epochs are what make ``--resume`` exact: the sampler is a
``DistributedSampler`` (also with one process: it shuffles by ``seed + epoch``), and the
loader's generator, which seeds the worker processes' augmentation, is re-seeded at the start
of every epoch (``set_epoch``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from yolodata import (
    AugmentConfig,
    Batch,
    DataError,
    DataSpec,
    YoloDataset,
    check_split,
    collate,
    load_spec,
)


@dataclass(frozen=True)
class DetectionData:
    """What the engine needs from a dataset description.

    Unreadable images are skipped and counted wherever they are found (``yolodata.labels``):
    ``checked`` holds those the header check left out, the datasets' ``skipped`` those found
    while decoding, and ``skipped`` all of them so far.
    """

    train: YoloDataset
    val: YoloDataset
    names: tuple[str, ...]
    checked: tuple[tuple[str, str], ...]  # (image, reason) left out by the header check

    @property
    def skipped(self) -> tuple[tuple[str, str], ...]:
        found = dict(self.checked)
        for dataset in (self.val, self.train):
            found.update(getattr(dataset, "skipped", {}))
        return tuple(found.items())


def skipped_summary(skipped: tuple[tuple[str, str], ...]) -> str:
    """The one line a command prints about the images it left out."""
    first, why = skipped[0]
    return f"skipped {len(skipped)} unreadable image(s), e.g. {first}: {why}"


def _split(spec: DataSpec, split: str, img_size: int, **kw) -> tuple[YoloDataset, tuple]:
    images = getattr(spec, split)
    check = check_split(images, spec.num_classes, split)
    dataset = YoloDataset(check.images, spec.num_classes, img_size, **kw)
    if not len(dataset):
        raise DataError(f"{split}: none of its {len(images)} images is readable")
    return dataset, tuple((str(p), why) for p, why in check.skipped)


def build_data(spec: DataSpec, img_size: int, augment: AugmentConfig | None = None,
               train: bool = True) -> DetectionData:
    """Check every label file and image header first (bad data fails before epoch 1)."""
    val, skipped = _split(spec, "val", img_size, augment=False)
    train_set = val
    if train:
        if not spec.train:
            raise DataError(f"{spec.source}: no train split (a data yaml with only val "
                            "serves eval, not training)")
        train_set, more = _split(spec, "train", img_size, augment=True, hyp=augment)
        skipped += more
    return DetectionData(train_set, val, spec.names, skipped)


def load_data(source: str | Path | DataSpec, img_size: int, num_classes: int,
              train: bool = True) -> DetectionData:
    """The data set ``source`` names (a data yaml, a Darknet ``.data`` file, ``"demo"``, or a
    ``DataSpec`` already loaded), checked against a model's class count, then built
    (``build_data``; ``train=False``: the val split only). Training, evaluation and comparison
    all load their data here."""
    from common.errors import UserError

    spec = source if isinstance(source, DataSpec) else load_spec(source)
    if spec.num_classes != num_classes:
        raise UserError(f"{spec.source}: {spec.num_classes} class names but the model's "
                        f"[yolo] layers have classes={num_classes}")
    return build_data(spec, img_size, train=train)


def sample_split(spec: DataSpec, split: str, n: int, img_size: int,
                 seed: int = 0) -> YoloDataset:
    """``n`` images of ``split`` (all of them if it has fewer), letterboxed, not augmented: the
    calibration set of BN recalibration and sensitivity analysis. Drawn at random (seeded), in
    file order: a split listed by class or by video would give one kind of image otherwise;
    only the drawn images are checked and decoded."""
    images = getattr(spec, split)
    if n < len(images):
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        images = tuple(images[i] for i in sorted(pick.tolist()))
    check = check_split(images, spec.num_classes, split)
    return YoloDataset(check.images, spec.num_classes, img_size, augment=False)


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

    def __iter__(self) -> Iterator[Batch]:
        """The batches; images that fail to decode are left out and recorded in the
        dataset's ``skipped`` (here, in the main process: the workers of later epochs are
        started from it and do not decode those files again)."""
        found = getattr(self.loader.dataset, "skipped", None)
        for batch in self.loader:
            if batch.skipped and found is not None:
                found.update(batch.skipped)
            if batch.paths:
                yield batch
            elif self.sampler.num_replicas > 1:  # a skipped step would stall the others
                raise DataError(f"every image of a batch is unreadable, e.g. "
                                f"{batch.skipped[0][0]}: {batch.skipped[0][1]}")

    def __len__(self) -> int:
        return len(self.loader)
