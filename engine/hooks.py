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
        files written (rank 0): weights, checkpoint, results
    on_train_end(trainer)

Examples (issue 5): the sparsity penalty is an ``after_backward`` hook adding
``s * sign(gamma)`` to ``bn.weight.grad`` of the prunable BatchNorms (under DDP the
gradients are already averaged there, so every rank adds the same term); distillation is an
``extra_loss`` hook running a frozen teacher on ``images``. ``on_epoch_end`` may add keys to
``metrics`` (e.g. the fraction of near-zero gammas): they become columns of results.json/csv.
A hook with state that must survive ``--resume`` implements ``state_dict``/``load_state_dict``;
it is stored in the checkpoint under the hook's ``name``.

What a hook may read on the trainer: ``model`` (the bare ``Darknet``, never the DDP
wrapper), ``optimizer``, ``ema`` (or None), ``epoch``, ``iteration`` (global step),
``config``, ``device``, ``dist``, ``out_dir``, ``log(text)`` (prints on rank 0 only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from engine.trainer import Trainer


class Hook:
    """Base class: every method does nothing. ``name`` labels the hook's extra-loss column
    (``loss_<name>``) and its checkpoint state."""

    name: str = "hook"

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def extra_loss(
        self, trainer: Trainer, images: Tensor, targets: Tensor, outputs: list[Tensor]
    ) -> Tensor | None:
        """A scalar added to the YOLO loss (same scale: per-batch total), or None."""
        return None

    def after_backward(self, trainer: Trainer) -> None:
        pass

    def after_step(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
