"""The training engine: it learns, resumes exactly, stops cleanly on NaN, calls hooks in order."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import ROOT

from common.errors import UserError
from darknet import Darknet
from engine.checkpoint import load_checkpoint
from engine.data import DetectionData, EpochLoader, build_data
from engine.evaluator import evaluate_batches
from engine.hooks import Hook
from engine.loss import init_detection_biases
from engine.trainer import NonFiniteLossError, TrainConfig, Trainer
from yolodata import YoloDataset, load_spec

DEMO = ROOT / "cfgs" / "demo.cfg"


@pytest.fixture(scope="module")
def spec(make_demo_data):
    # seed 1: on its 4 val images 50 epochs overfit past mAP@.5 0.5 (seed 2's reach 0.38)
    return load_spec(make_demo_data(seed=1))


def fresh_model(seed=0):
    torch.manual_seed(seed)
    model = Darknet(DEMO)
    init_detection_biases(model, 64)
    return model


def small_config(**kw):
    base = dict(epochs=2, batch_size=4, img_size=64, seed=0)
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_overfits_a_handful_of_images(spec, tmp_path):
    """Loss falls and mAP climbs on 4 un-augmented images seen over and over."""
    fixed = YoloDataset(spec.val, spec.num_classes, 64, augment=False)
    data = DetectionData(fixed, fixed, spec.names, ())
    model = fresh_model()
    before = evaluate_batches(model, EpochLoader(fixed, 4, False, 0), spec.names)
    config = small_config(epochs=50, lr0=0.02, warmup_epochs=3, ema=False, eval_interval=50)
    history = Trainer(model, data, config, tmp_path, progress=False).fit()
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    assert history[-1]["map50"] > max(0.5, before.map50 + 0.4)


class Interrupt(Hook):
    """Stops the run at the start of an epoch, as a kill between epochs would."""

    name = "interrupt"

    def __init__(self, at_epoch):
        self.at_epoch = at_epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_continues_with_identical_state(spec, tmp_path, optimizer):
    config = small_config(epochs=3, ema=True, eval_interval=2, optimizer=optimizer)
    data = build_data(spec, 64)  # augmented: the RNG streams must line up too
    straight = Trainer(fresh_model(), data, config, tmp_path / "a", progress=False)
    straight.fit()

    with pytest.raises(KeyboardInterrupt):
        Trainer(fresh_model(), data, config, tmp_path / "b", progress=False,
                hooks=[Interrupt(2)]).fit()
    checkpoint = load_checkpoint(tmp_path / "b" / "last.pt")
    assert checkpoint["epoch"] == 2
    resumed = Trainer(fresh_model(seed=1), data, config, tmp_path / "b", progress=False)
    resumed.fit(checkpoint)

    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for key, value in straight.ema.module.state_dict().items():
        assert torch.equal(value, resumed.ema.module.state_dict()[key]), key
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for key, state in opt_a["state"].items():
        for name, value in state.items():  # momentum buffer, or Adam's moments and step
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][key][name]))
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()
    assert straight.iteration == resumed.iteration
    for name in ("last.weights", "best.weights"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    drop = ("images_per_s", "train_s", "eval_s")
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in json.loads(
        (tmp_path / d / "results.json").read_text())["epochs"]] for d in "ab"]
    assert rows[0] == rows[1] and len(rows[0]) == 3


class PoisonAt(Hook):
    name = "poison"

    def __init__(self, epoch):
        self.epoch = epoch

    def extra_loss(self, trainer, images, targets, outputs):
        return torch.tensor(float("nan")) if trainer.epoch == self.epoch else None


@pytest.mark.slow
def test_nan_loss_stops_with_last_good_checkpoint_intact(spec, tmp_path):
    data = build_data(spec, 64)
    config = small_config(epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, iteration 1 .*"
                                                 r"last\.pt \(epoch 1\) is intact"):
        Trainer(fresh_model(), data, config, tmp_path, progress=False,
                hooks=[PoisonAt(1)]).fit()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert len(json.loads((tmp_path / "results.json").read_text())["epochs"]) == 1
    saved = Darknet(DEMO)
    saved.load_weights(tmp_path / "last.weights")  # complete, readable

    with pytest.raises(NonFiniteLossError, match="no epoch had completed, nothing was written"):
        Trainer(fresh_model(), data, config, tmp_path / "first", progress=False,
                hooks=[PoisonAt(0)]).fit()
    assert not (tmp_path / "first").exists() or not any((tmp_path / "first").iterdir())


class Recorder(Hook):
    name = "recorder"

    def __init__(self):
        self.events = []

    def on_train_start(self, trainer):
        self.events.append("start")

    def on_epoch_start(self, trainer, epoch):
        self.events.append(f"epoch{epoch}")

    def extra_loss(self, trainer, images, targets, outputs):
        self.events.append("extra")
        assert images.shape == (4, 3, 64, 64) and targets.shape[1] == 6 and len(outputs) == 3
        return outputs[0].new_tensor(0.25)

    def after_backward(self, trainer):
        grads = [p.grad for p in trainer.model.parameters()]
        assert all(g is not None for g in grads)
        self.events.append("backward")

    def after_step(self, trainer):
        self.events.append(f"step{trainer.iteration}")

    def on_epoch_end(self, trainer, metrics):
        metrics["recorded"] = len(self.events)
        self.events.append(f"end{epoch_of(metrics)}")

    def on_train_end(self, trainer):
        self.events.append("done")


def epoch_of(metrics):
    return metrics["epoch"]


@pytest.mark.slow
def test_hooks_run_in_order_and_their_columns_reach_the_results(spec, tmp_path):
    recorder = Recorder()
    config = small_config(epochs=1)
    Trainer(fresh_model(), build_data(spec, 64), config, tmp_path, progress=False,
            hooks=[recorder]).fit()
    assert recorder.events == ["start", "epoch0", "extra", "backward", "step1", "extra",
                               "backward", "step2", "end1", "done"]
    row = json.loads((tmp_path / "results.json").read_text())["epochs"][0]
    assert row["loss_recorder"] == pytest.approx(0.25)
    assert row["recorded"] == 8
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    for column in ("epoch", "loss", "loss_box", "loss_obj", "loss_cls", "lr", "images_per_s",
                   "map50", "map", "loss_recorder", "recorded"):
        assert column in header
    assert {p.name for p in tmp_path.iterdir()} == {
        "last.weights", "best.weights", "last.pt", "results.json", "results.csv", "results.png"}


def test_weight_decay_skips_batchnorm_and_biases():
    from engine.optim import param_groups

    model = Darknet(DEMO)
    decay, no_decay = param_groups(model, 5e-4)
    assert all(p.ndim == 4 for p in decay["params"])
    bn_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert bn_weights <= {id(p) for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0


def test_optimizer_choice_and_its_warmup_momentum(spec, tmp_path):
    """adamw is AdamW whose beta1 follows the momentum warm-up as SGD's momentum does."""
    config = small_config(epochs=1, optimizer="adamw", lr0=0.003, warmup_epochs=1, ema=False,
                          eval_interval=1)
    data = build_data(spec, 64)
    trainer = Trainer(fresh_model(), data, config, tmp_path, progress=False)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [5e-4, 0.0]
    trainer.optim.set_momentum(0)
    assert trainer.optimizer.param_groups[0]["betas"] == (config.warmup_momentum, 0.999)
    trainer.optim.set_momentum(trainer.optim.warmup_iters)
    assert trainer.optimizer.param_groups[0]["betas"] == (config.momentum, 0.999)
    sgd = Trainer(fresh_model(), data, small_config(), tmp_path / "sgd", progress=False)
    assert isinstance(sgd.optimizer, torch.optim.SGD) and sgd.optimizer.defaults["nesterov"]
    with pytest.raises(UserError, match="optimizer must be one of sgd, adamw, got 'adam'"):
        small_config(optimizer="adam")


def test_cpu_threads_leave_room_for_loader_workers(monkeypatch):
    import engine.distributed as d

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(d, "_cores", lambda: 8)
    try:
        assert d.set_cpu_threads(d.DistInfo(), workers=2) == 6
        assert torch.get_num_threads() == 6
        assert d.set_cpu_threads(d.DistInfo(world_size=2), workers=1) == 3
        assert d.set_cpu_threads(d.DistInfo(), workers=16) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert d.set_cpu_threads(d.DistInfo(), workers=0) is None
        assert d.default_workers(d.DistInfo()) == 0
        assert d.default_workers(d.DistInfo(world_size=2, device=torch.device("cuda", 0))) == 3
    finally:
        torch.set_num_threads(before)


def test_trainer_offers_what_the_hook_contract_lists_and_the_hooks_read_no_more(spec, tmp_path):
    """Every name of engine.hooks.TrainerView exists on the Trainer, and the project's hooks
    (sparsity, distillation) run on a view that offers those names and nothing else."""
    from engine.hooks import TrainerView
    from finetune.hook import DistillationHook
    from sparsity.hook import SparsityHook
    from sparsity.penalty import SparsitySchedule

    names = set(TrainerView.__annotations__) | {n for n in vars(TrainerView)
                                                if not n.startswith("_")}
    assert {"model", "eval_model", "ema", "optimizer", "epoch", "iteration", "config",
            "device", "dist", "out_dir", "log", "steps_per_epoch", "evaluate",
            "request_stop"} == names
    trainer = Trainer(fresh_model(), build_data(spec, 64), small_config(epochs=1), tmp_path,
                      progress=False)
    for name in names:
        getattr(trainer, name)

    class Strict:
        def __getattr__(self, name):
            if name not in names:
                raise AttributeError(f"trainer.{name} is not in the hook contract")
            return getattr(trainer, name)

    view, images = Strict(), torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.2]])
    for hook in (SparsityHook(SparsitySchedule(0.01)), DistillationHook(fresh_model(1))):
        hook.on_train_start(view)
        hook.on_epoch_start(view, 0)
        outputs = trainer.model(images)
        extra = hook.extra_loss(view, images, targets, outputs)
        (sum(o.sum() for o in outputs) + (extra if extra is not None else 0)).backward()
        hook.after_backward(view)
        hook.after_step(view)
        metrics = {"epoch": 1}
        hook.on_epoch_end(view, metrics)
        hook.write(tmp_path)
        hook.on_train_end(view)
    assert (tmp_path / "gamma_stats.json").is_file()  # the sparsity hook's own file
