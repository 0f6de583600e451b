"""Target-aware sparse training (``sparsity.target``) and the planned cut (``prune.plan``).

The oracles: the planned groups end near zero while the kept ones stay where they were (plain
L1, given the same job, cannot do both); the masked model computes what the cut model
computes; the mAP a sparse run reports for its masked model is the mAP of the model that
``main.py prune`` then cuts from its weights.
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from helpers import ROOT, calibrate, randomize_bn

from darknet import Darknet
from prune import PruneSettings, prune_model
from prune.plan import CutPlan, masked_model, plan_cut
from sparsity.penalty import add_l1_subgradient
from sparsity.target import FadeSchedule, TargetSparsityHook

DEMO = ROOT / "cfgs" / "demo.cfg"
TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"
SETTINGS = PruneSettings(ratio=0.4, flops_exponent=0.0)


def model_of(path, seed=0) -> Darknet:
    torch.manual_seed(seed)
    return calibrate(randomize_bn(Darknet(path), seed), size=64, seed=seed).eval()


class FakeTrainer(SimpleNamespace):
    """The part of ``engine.hooks.TrainerView`` the hook reads, around a bare model."""

    def __init__(self, model, steps):
        super().__init__(model=model, ema=None, iteration=0, steps_per_epoch=steps,
                         config=SimpleNamespace(epochs=1), messages=[])

    @property
    def eval_model(self):
        return self.model

    def log(self, text):
        self.messages.append(text)


def gammas(model, plan: CutPlan):
    """(planned |gamma| max, every kept gamma) of ``model`` under ``plan``."""
    planned, kept = [], []
    for bn, idx, _ in plan.groups(model):
        mask = torch.zeros(bn.num_features, dtype=torch.bool)
        mask[idx] = True
        planned.append(bn.weight.detach()[mask].abs())
    touched = {name for name in plan.channels} | set(plan.blocks)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            keep = torch.ones(m.num_features, dtype=torch.bool)
            if name in plan.channels:
                keep[list(plan.channels[name])] = False
            if name in plan.blocks:
                keep[:] = False
            kept.append(m.weight.detach()[keep].clone())
    assert touched
    return torch.cat(planned).max().item(), torch.cat(kept)


def train_steps(model, steps, penalize):
    """``steps`` SGD steps on a fixed regression of the raw outputs, ``penalize()`` after
    each backward (the L1 subgradient) and ``after(step)`` after each optimizer step."""
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = [o + 0.1 * torch.randn_like(o) for o in model.eval()(x, raw=True)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    for step in range(steps):
        opt.zero_grad()
        loss = sum(((o - t) ** 2).mean() for o, t in zip(model(x, raw=True), target,
                                                        strict=True))
        loss.backward()
        penalize(step, "backward")
        opt.step()
        penalize(step, "step")
    return model.eval()


STEPS = 300


def run_target(model):
    plan = plan_cut(model, SETTINGS, 64)
    hook = TargetSparsityHook(SETTINGS, 64, ramp=1.0)
    trainer = FakeTrainer(model, STEPS)
    hook.names = []
    hook.fade = FadeSchedule(STEPS)
    hook._set_plan(trainer, plan)

    def penalize(step, when):
        if when == "step":
            trainer.iteration = step + 1
            hook.after_step(trainer)
    return plan, penalize


def test_the_target_penalty_empties_the_plan_and_leaves_the_rest():
    model = model_of(TINY)
    plan, penalize = run_target(model)
    _, kept_before = gammas(model, plan)
    train_steps(model, STEPS, penalize)
    planned_after, kept_after = gammas(model, plan)
    assert planned_after < 1e-3
    assert (kept_after - kept_before).abs().max() < 0.05


def test_plain_l1_cannot_do_both():
    """L1 strong enough to bring the planned gammas under 1e-3 in as many steps drags the
    kept ones down with them: the band of the test above is broken."""
    model = model_of(TINY)
    plan = plan_cut(model, SETTINGS, 64)
    _, kept_before = gammas(model, plan)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    start = max(bn.weight.abs().max().item() for bn in bns)
    s = start / (1e-3 * 0.9 ** -1 * STEPS) * 1.2  # enough to walk the largest gamma to zero

    def penalize(step, when):
        if when == "backward":
            add_l1_subgradient(bns, s)
    train_steps(model, STEPS, penalize)
    planned_after, kept_after = gammas(model, plan)
    assert not (planned_after < 1e-3 and (kept_after - kept_before).abs().max() < 0.05)


def test_fade_schedule_grows_geometrically_then_holds():
    fade = FadeSchedule(100, start=1e-4)
    assert fade.eta(0) == pytest.approx(1e-4) and fade.eta(50) == pytest.approx(1e-2)
    assert fade.eta(75) == pytest.approx(0.1)
    etas = [fade.eta(t) for t in range(100)]
    assert all(b > a for a, b in zip(etas, etas[1:], strict=False))
    assert fade.eta(100) == fade.eta(119) == 1.0 and fade.held(100) and not fade.held(99)
    survive = 1.0
    for t in range(100):
        survive *= 1 - fade.eta(t)
    assert survive < 1e-6  # the hold that follows changes (almost) nothing
    with pytest.raises(ValueError, match="at least one step"):
        FadeSchedule(0)


@pytest.mark.parametrize("settings", [SETTINGS, PruneSettings(layers=2, ratio=0.3)],
                         ids=["channels", "blocks+channels"])
def test_the_masked_model_computes_what_the_cut_model_computes(settings):
    """With the planned channels' betas at zero (what the fade leaves), the masked dense model
    and the slim model give the same logits; the plan is not empty, and masking changes the
    dense model's output (so the comparison can fail)."""
    model = model_of(DEMO)
    plan = plan_cut(model, settings, 64)
    assert plan.removed_channels and (plan.blocks or not settings.layers)
    with torch.no_grad():
        for bn, idx, _ in plan.groups(model):
            bn.bias[idx] = 0
    slim, _ = prune_model(model, settings, 64)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        masked = masked_model(model, plan)(x, raw=True)
        cut = slim.eval()(x, raw=True)
        dense = model(x, raw=True)
    for m, c, d in zip(masked, cut, dense, strict=True):
        torch.testing.assert_close(c, m, atol=1e-4, rtol=1e-4)
        assert (m - d).abs().max() > 1e-2


def test_plan_mass_and_diff():
    model = model_of(TINY)
    plan = plan_cut(model, SETTINGS, 64)
    assert plan.mass(model) > 0
    assert plan.mass(masked_model(model, plan)) == 0
    assert plan.diff(plan) == 0
    other = CutPlan({k: v[1:] for k, v in plan.channels.items()}, plan.blocks, 0, 0.0)
    assert plan.diff(other) == len(plan.channels)


@pytest.mark.e2e
def test_a_sparse_run_reports_the_mAP_prune_then_gets(tmp_path, capsys, make_demo_data):
    """sparse (target) for 2 epochs with the plan held at zero for the last one: its last
    masked mAP is the unmasked one, and prune of its weights with the same flags cuts a model
    that `eval` scores the same (BN recalibrated in neither)."""
    from main import main

    data = make_demo_data(seed=1, n_train=16, n_val=8)
    dense = tmp_path / "dense.weights"
    torch.manual_seed(0)
    model = Darknet(DEMO)
    randomize_bn(model)
    model.save_weights(dense)
    plan = ["--layers", "1", "--ratio", "0.3", "--ranking", "gamma"]
    common = ["--data", str(data), "--img-size", "64"]
    assert main(["sparse", "--cfg", str(DEMO), "--weights", str(dense), "--epochs", "2",
                 "--batch-size", "8", "--ramp", "0.5", "--out", str(tmp_path / "sparse"),
                 "--no-progress", *plan, *common]) == 0
    rows = list(csv.DictReader(open(tmp_path / "sparse" / "results.csv")))
    assert float(rows[-1]["cut_left"]) == 0
    assert float(rows[-1]["map50_masked"]) == float(rows[-1]["map50"])
    stats = json.loads((tmp_path / "sparse" / "gamma_stats.json").read_text())
    assert stats["plan"]["blocks"] and "planned" in stats["epochs"][-1]
    assert main(["prune", "--cfg", str(DEMO), "--weights", str(tmp_path / "sparse/last.weights"),
                 *plan, "--img-size", "64", "--out", str(tmp_path / "prune")]) == 0
    report = json.loads((tmp_path / "prune" / "prune_report.json").read_text())
    assert [b["bn"] for b in report["removed_blocks"]] == stats["plan"]["blocks"]
    capsys.readouterr()
    assert main(["eval", "--cfg", str(tmp_path / "prune/pruned.cfg"), "--weights",
                 str(tmp_path / "prune/pruned.weights"), "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["map50"] == pytest.approx(float(rows[-1]["map50"]), abs=1e-6)
    assert result["map"] == pytest.approx(float(rows[-1]["map"]), abs=1e-6)
