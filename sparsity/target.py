"""Target-aware sparse training: empty exactly what the planned cut removes, leave the rest.

Network slimming's L1 pulls on every prunable gamma alike, so the cut that a budget asks for
lands past what sparsity emptied and the model right after it scores ~0 (issue 20). Growing
regularization (Wang et al., ICLR 2021) instead chooses the groups to remove first and
regularizes only those, harder and harder, until they are zero; the kept groups train freely
and take over what the removed ones did.

Here the groups are the coupled channels and the blocks of the planned cut (``prune.plan``:
the very ``prune_model`` selection ``main.py prune`` will make with the same settings). Each
optimizer step multiplies the planned gammas and betas by ``1 - eta_t`` (a decoupled L2
penalty, so it acts the same under SGD or AdamW and at any learning rate), ``eta`` growing
geometrically over the ramp (:class:`FadeSchedule`); after the ramp they are held at zero,
so the cut is lossless by construction and the last epochs train the slim network inside the
dense one (its BatchNorm statistics included). The EMA copy (what gets evaluated, saved and
pruned) is held at zero with them.

The plan is chosen again at the end of every epoch of the ramp on the EMA weights, exactly as
``prune`` would choose it from the saved file, and frozen once the planned groups are held at
zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prune.pipeline import needs_latency
from prune.plan import CutPlan, consumer_inputs, masked_model, plan_cut
from prune.settings import PruneSettings

from .hook import SparsityHook
from .penalty import SparsitySchedule


@dataclass(frozen=True)
class FadeSchedule:
    """``eta_t = start ** (1 - t / ramp_steps)`` for ``t < ramp_steps``, then 1 (held at zero).

    The decay rate grows geometrically, from ``start`` (1e-4: nothing happens) to 1 at the end
    of the ramp, tenfold every quarter of the ramp. A constant rate would lose against the
    gradient, which pulls a weight the network still uses back to where ``eta * w`` equals
    ``lr * grad``; a rate growing by orders of magnitude pushes that balance towards zero
    step by step, so the network learns to do without the planned channels while they fade,
    and the final hold changes nothing it still relies on.
    """

    ramp_steps: int
    start: float = 1e-4

    def __post_init__(self):
        if self.ramp_steps < 1:
            raise ValueError(f"the ramp must last at least one step, got {self.ramp_steps}")
        if not 0 < self.start < 1:
            raise ValueError(f"the starting fade rate must be in (0, 1), got {self.start}")

    def eta(self, step: int) -> float:
        if step >= self.ramp_steps:
            return 1.0
        return self.start ** (1 - step / self.ramp_steps)

    def held(self, step: int) -> bool:
        """Past the ramp: the planned groups are exactly zero and the plan is final."""
        return step >= self.ramp_steps


class TargetSparsityHook(SparsityHook):
    """Fades the planned cut out of the model; reports per epoch how ready it is to cut.

    Metrics added per epoch (results.csv columns): ``cut_left``, the planned |gamma| mass as a
    share of what it was when training started (``CutPlan.mass``); ``map50_masked`` and
    ``map_masked``, the mAP of the evaluated model with the plan masked, i.e. the pruned
    model's mAP without cutting; ``plan_changed``, channels the epoch's re-planning moved.
    With ``ready_tol`` the run stops after the first epoch whose masked mAP@.5 and
    mAP@.5:.95 are both within ``ready_tol`` of the unmasked ones.
    """

    def __init__(self, settings: PruneSettings, img_size: int, ramp: float = 0.7,
                 ready_tol: float | None = None, threshold: float = 0.01, latency=None):
        super().__init__(SparsitySchedule(0.0), str(settings.scope), threshold, settings.ratio)
        if not 0 < ramp <= 1:
            raise ValueError(f"the ramp must be a fraction of the epochs in (0, 1], got {ramp}")
        if ready_tol is not None and ready_tol < 0:
            raise ValueError(f"the readiness tolerance must be >= 0, got {ready_tol}")
        self.settings, self.img_size, self.ramp = settings, img_size, ramp
        self.ready_tol, self.latency = ready_tol, latency
        self.plan: CutPlan | None = None
        self.start_mass: float | None = None
        self.fade: FadeSchedule | None = None
        self._targets: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._ema_targets: list[tuple[torch.Tensor, torch.Tensor]] = []

    # -- the plan -----------------------------------------------------------------------
    def _plan(self, trainer) -> CutPlan:
        if self.latency is None and needs_latency(self.settings):
            from prune.op_timing import ort_context

            self.latency = ort_context(self.img_size)
        return plan_cut(trainer.eval_model, self.settings, self.img_size, self.latency)

    def _set_plan(self, trainer, plan: CutPlan) -> None:
        self.plan = plan
        readers = consumer_inputs(trainer.eval_model, plan, min(self.img_size, 64))
        self._targets = self._tensors(trainer.model, plan, readers)
        self._ema_targets = (self._tensors(trainer.ema.module, plan, readers)
                             if trainer.ema is not None else [])

    @staticmethod
    def _tensors(model, plan: CutPlan, readers: dict[str, torch.Tensor]) -> list[tuple]:
        """(tensor, index) pairs that fade: the planned BNs' gammas and betas, and the input
        channels of the convs that read them (``prune.plan.consumer_inputs``: the group's
        other side, which the slim model drops too)."""
        pairs: list[tuple] = [(t, idx) for bn, idx, _ in plan.groups(model)
                              for t in (bn.weight, bn.bias)]
        modules = dict(model.named_modules())
        for name, idx in readers.items():
            weight = modules[name].weight
            pairs.append((weight, (slice(None), idx.to(weight.device))))
        return pairs

    def describe(self, trainer) -> None:
        pass  # the plan is described once chosen

    def on_train_start(self, trainer) -> None:
        super().on_train_start(trainer)
        steps = max(1, round(self.ramp * trainer.config.epochs * trainer.steps_per_epoch))
        self.fade = FadeSchedule(steps)
        if self.plan is None:  # a fresh run; a resumed one restored its plan
            self._set_plan(trainer, self._plan(trainer))
            self.start_mass = self.plan.mass(trainer.eval_model)
        else:
            self._set_plan(trainer, self.plan)
        trainer.log(f"sparsity: fading out the planned cut ({self.plan.removed_channels} "
                    f"channels, {len(self.plan.blocks)} blocks; slim model {self.plan.params:,} "
                    f"params, {self.plan.gflops:.3f} GFLOPs) over {steps} steps, then holding "
                    "it at zero")

    # -- the penalty --------------------------------------------------------------------
    def after_backward(self, trainer) -> None:
        pass  # no L1: the planned groups fade in after_step, the kept ones are left alone

    def after_step(self, trainer) -> None:
        """Fade the raw model's planned groups. The EMA copy averages them like every other
        weight while they fade (shrinking it alone would pair faded channels with kept ones
        that still expect them); once they are held at zero, so is the EMA's copy, which
        else would trail them for the average's ~1000 steps."""
        keep = 1.0 - self.fade.eta(trainer.iteration)
        held = self.fade.held(trainer.iteration)
        with torch.no_grad():
            for tensor, idx in self._targets + (self._ema_targets if held else []):
                tensor[idx] = tensor[idx] * keep

    # -- readiness ----------------------------------------------------------------------
    def on_epoch_end(self, trainer, metrics: dict[str, Any]) -> None:
        changed = 0
        if not self.fade.held(trainer.iteration):
            new = self._plan(trainer)
            changed = new.diff(self.plan)
            if changed:
                self._set_plan(trainer, new)
        evaluated = trainer.eval_model
        mass = self.plan.mass(evaluated)
        masked = (None, None)
        if metrics["map"] is not None:  # an evaluated epoch: the masked model beside it
            masked = ((metrics["map50"], metrics["map"]) if mass == 0
                      else trainer.evaluate(masked_model(evaluated, self.plan)))
        metrics.update(cut_left=mass / self.start_mass if self.start_mass else 0.0,
                       map50_masked=masked[0], map_masked=masked[1], plan_changed=changed)
        super().on_epoch_end(trainer, metrics)
        self.history[-1]["planned"] = self._planned_histogram(evaluated)
        trainer.log(readiness_line(metrics))
        if self._ready(metrics):
            trainer.request_stop(f"the masked mAP is within {self.ready_tol:g} of the "
                                 "unmasked one: ready to cut")

    def _ready(self, m: dict[str, Any]) -> bool:
        if self.ready_tol is None or m["map50"] is None or m["map50_masked"] is None:
            return False
        return (m["map50"] - m["map50_masked"] <= self.ready_tol
                and m["map"] - m["map_masked"] <= self.ready_tol)

    def _planned_histogram(self, model) -> list[float]:
        """The planned channels' share of the prunable channels, per |gamma| bin."""
        from .stats import EDGES

        modules = dict(model.named_modules())
        total = sum(modules[n].num_features for n in self.names)
        gammas = [bn.weight.detach()[idx].abs().float().cpu()
                  for bn, idx, _ in self.plan.groups(model)]
        values = torch.cat(gammas) if gammas else torch.zeros(0)
        edges = torch.tensor(EDGES)
        bins = torch.bucketize(values.clamp(EDGES[0], EDGES[-1]), edges[1:-1])
        counts = torch.bincount(bins, minlength=len(EDGES) - 1).float()
        return (counts / max(total, 1)).tolist()

    # -- state ----------------------------------------------------------------------------
    def extra_stats(self) -> dict[str, Any]:
        return {"plan": self.plan.as_dict(), "settings": self.settings.as_dict()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "penalty": "target",
                "plan": self.plan.as_dict() if self.plan else None,
                "start_mass": self.start_mass}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("plan"):
            p = state["plan"]
            self.plan = CutPlan({k: tuple(v) for k, v in p["channels"].items()},
                                tuple(p["blocks"]), p["params"], p["gflops"])
            self.start_mass = state["start_mass"]


def readiness_line(m: dict[str, Any]) -> str:
    """``readiness: 3% of the planned |gamma| left, masked mAP@.5 0.95 (-0.01) ...``."""
    text = f"readiness: {m['cut_left']:.1%} of the planned cut's |gamma| left"
    if m.get("map50_masked") is not None and m.get("map50") is not None:
        text += (f", masked mAP@.5 {m['map50_masked']:.4f} ({m['map50_masked'] - m['map50']:+.4f})"
                 f" mAP@.5:.95 {m['map_masked']:.4f} ({m['map_masked'] - m['map']:+.4f})")
    if m.get("plan_changed"):
        text += f", plan moved {m['plan_changed']} channels"
    return text

