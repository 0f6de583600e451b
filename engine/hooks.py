"""Extension points of the one training loop (``engine.trainer.Trainer``).

Train, sparse training and fine-tuning are the same loop; what differs plugs in here.
A hook overrides any of the methods below; the trainer calls them in list order, on every
process (rank), at these points of ``Trainer.fit``::

    on_train_start(trainer)                 after setup and resume, before the first epoch
    for each epoch:
        on_epoch_start(trainer, epoch)
        for each batch:
            outputs = model(images)          (train-mode raw head outputs)
            loss = yolo_loss + sum(extra_loss(trainer, images, targets, outputs))
            backward; gradients unscaled (AMP) and clipped
            after_backward(trainer)          true gradients, before optimizer.step()
            optimizer.step(); EMA update
            after_step(trainer)
        evaluation (rank 0), then on_epoch_end(trainer, metrics)
        files written (rank 0, engine.writer): checkpoint, weights, results, then write(out_dir)
    on_train_end(trainer)

Examples (issue 5): the sparsity penalty is an ``after_backward`` hook adding
``s * sign(gamma)`` to ``bn.weight.grad`` of the prunable BatchNorms (under DDP the
gradients are already averaged there, so every rank adds the same term); distillation is an
``extra_loss`` hook running a frozen teacher on ``images``. ``on_epoch_end`` may add keys to
``metrics`` (e.g. the fraction of near-zero gammas): they become columns of results.json/csv.
A hook with state that must survive ``--resume`` implements ``state_dict``/``load_state_dict``;
it is stored in the checkpoint under the hook's ``name``. A hook with files of its own writes
them in ``write(out_dir)`` from that state alone: the writer calls it after the epoch's
checkpoint, and again when a resumed run restores the checkpoint's epoch, so the files never
run ahead of the checkpoint.

What a hook may read on the trainer is ``TrainerView``, and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import Tensor

if TYPE_CHECKING:
    import torch

    from darknet import Darknet
    from engine.distributed import DistInfo
    from engine.ema import ModelEMA
    from engine.trainer import TrainConfig


class TrainerView(Protocol):
    """The part of the trainer a hook sees (``Trainer`` provides exactly these)."""

    model: Darknet          # the bare network being trained, never the DDP wrapper
    ema: ModelEMA | None
    epoch: int              # epochs completed (during an epoch: its 0-based index)
    iteration: int          # optimizer steps taken, over the whole run
    config: TrainConfig
    device: torch.device
    dist: DistInfo
    out_dir: Path

    @property
    def eval_model(self) -> Darknet:
        """What gets evaluated and saved: the EMA copy when EMA is on, else ``model``."""

    @property
    def optimizer(self) -> Any:
        """The ``torch.optim.Optimizer`` (its param groups carry the current lr)."""

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch."""

    def evaluate(self, model: Darknet) -> tuple[float, float]:
        """(mAP@.5, mAP@.5:.95) of ``model`` on the run's val split (rank 0 only)."""

    def request_stop(self, reason: str) -> None:
        """End the run after the current epoch; the checkpoint records it."""

    def log(self, text: str) -> None:
        """Print a line on rank 0 only, without breaking the progress bar."""


class Hook:
    """Base class: every method does nothing. ``name`` labels the hook's extra-loss column
    (``loss_<name>``) and its checkpoint state."""

    name: str = "hook"

    def on_train_start(self, trainer: TrainerView) -> None:
        pass

    def on_epoch_start(self, trainer: TrainerView, epoch: int) -> None:
        pass

    def extra_loss(
        self, trainer: TrainerView, images: Tensor, targets: Tensor, outputs: list[Tensor]
    ) -> Tensor | None:
        """A scalar added to the YOLO loss (same scale: per-batch total), or None."""
        return None

    def after_backward(self, trainer: TrainerView) -> None:
        pass

    def after_step(self, trainer: TrainerView) -> None:
        pass

    def on_epoch_end(self, trainer: TrainerView, metrics: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: TrainerView) -> None:
        pass

    def write(self, out_dir: Path) -> None:
        """Write the hook's own files (rank 0 only) from its state."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

