"""Sparse training, fine-tuning, distillation, comparison and the end-to-end pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import ROOT

from common.errors import UserError
from darknet import Darknet
from finetune.distill import distillation_loss
from sparsity.hook import SparsityHook
from sparsity.penalty import SparsitySchedule

TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"
DEMO_CFG = ROOT / "cfgs" / "demo.cfg"


def fake_trainer(model, epoch=0, epochs=10):
    return SimpleNamespace(model=model, epoch=epoch, config=SimpleNamespace(epochs=epochs),
                           log=lambda text: None)


def test_sparsity_hook_adds_exactly_s_sign_gamma_to_prunable_bns_only():
    from prune import prunable_batchnorms

    torch.manual_seed(0)
    model = Darknet(TINY).train()
    with torch.no_grad():  # negative gammas too, so sign() matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(-1, 1)
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    # scope inner leaves the residual chains' BNs alone: they must keep their gradients
    hook = SparsityHook(SparsitySchedule(0.01), scope="inner")
    trainer = fake_trainer(model)
    hook.on_train_start(trainer)
    hook.after_backward(trainer)

    prunable = {id(bn.weight) for bn in prunable_batchnorms(model, "inner")}
    assert prunable and len(prunable) < sum(isinstance(m, torch.nn.BatchNorm2d)
                                            for m in model.modules())
    for name, p in model.named_parameters():
        expected = before[name] + 0.01 * torch.sign(p.detach()) if id(p) in prunable \
            else before[name]
        torch.testing.assert_close(p.grad, expected, rtol=0, atol=1e-7, msg=name)


def test_sparsity_scope_inner_penalizes_fewer_bns():
    from prune import prunable_batchnorms

    model = Darknet(ROOT / "cfgs" / "demo.cfg")
    inner, every = prunable_batchnorms(model, "inner"), prunable_batchnorms(model, "all")
    assert 0 < len(inner) < len(every)
    assert {id(b) for b in inner} <= {id(b) for b in every}


def test_sparsity_schedule():
    sched = SparsitySchedule(0.01, "decay", decay_start=0.5, final_frac=0.1)
    assert [sched.at(e, 10) for e in (0, 4, 5, 9)] == [0.01, 0.01, pytest.approx(0.001),
                                                      pytest.approx(0.001)]
    assert SparsitySchedule(0.02).at(9, 10) == 0.02
    with pytest.raises(ValueError, match="s must be >= 0, got -1"):
        SparsitySchedule(-1)


def _train(demo_data, tmp_path, hooks, epochs=2):
    from engine.data import build_data
    from engine.trainer import TrainConfig, Trainer
    from yolodata import load_spec

    torch.manual_seed(0)
    model = Darknet(DEMO_CFG)
    # batch 4: two steps per epoch over the 8 demo training images
    config = TrainConfig(epochs=epochs, batch_size=4, img_size=64, ema=False, seed=0,
                         eval_interval=epochs)
    trainer = Trainer(model, build_data(load_spec(demo_data), 64), config, tmp_path,
                      hooks=hooks, progress=False)
    trainer.fit()
    return trainer


@pytest.mark.slow
def test_sparse_training_shrinks_prunable_gammas_faster(demo_data, tmp_path):
    from prune import prunable_batchnorm_names

    names = prunable_batchnorm_names(Darknet(DEMO_CFG).cfg, "all")

    def l1(model):
        return sum(float(model.get_submodule(n).weight.detach().abs().sum()) for n in names)

    start = l1(Darknet(DEMO_CFG))
    plain = _train(demo_data, tmp_path / "plain", [])
    hook = SparsityHook(SparsitySchedule(1.0))  # strong: only 4 steps, small lr
    sparse = _train(demo_data, tmp_path / "sparse", [hook])
    assert l1(sparse.model) < l1(plain.model) < start * 1.05
    assert l1(sparse.model) < 0.97 * l1(plain.model)
    # the per-epoch report: metrics columns, stats json and the histogram PNG
    assert "gamma_below" in sparse.history[-1]
    stats = json.loads((tmp_path / "sparse" / "gamma_stats.json").read_text())
    assert len(stats["epochs"]) == 2 and len(stats["edges"]) == 41
    assert (tmp_path / "sparse" / "gamma_hist.png").read_bytes()[:4] == b"\x89PNG"


def test_distillation_loss_is_zero_for_identical_outputs_and_positive_otherwise():
    torch.manual_seed(0)
    outs = [torch.randn(2, 3, 4, 4, 9), torch.randn(2, 3, 8, 8, 9)]
    assert distillation_loss(outs, [o.clone() for o in outs]).item() == 0.0
    student = [o.clone().requires_grad_(True) for o in outs]
    shifted = [o + 0.3 for o in outs]
    loss = distillation_loss(student, shifted)
    assert loss.item() > 0
    loss.backward()
    assert all(s.grad.abs().sum() > 0 for s in student)
    with pytest.raises(UserError, match="does not match"):
        distillation_loss(outs, [torch.randn(2, 3, 4, 4, 10), outs[1]])


def test_distillation_hook_with_student_equal_to_teacher_adds_zero(demo_data, tmp_path):
    from finetune.hook import DistillationHook

    model = Darknet(DEMO_CFG).train()
    teacher = Darknet(DEMO_CFG)
    teacher.load_state_dict(model.state_dict())
    hook = DistillationHook(teacher, weight=2.0)
    trainer = SimpleNamespace(model=model, device=torch.device("cpu"))
    hook.on_train_start(trainer)
    model.eval()  # identical BN behaviour on both sides
    images = torch.rand(2, 3, 64, 64)
    assert hook.extra_loss(trainer, images, None, model(images, raw=True)).item() == 0.0


def run_main(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def test_compare_rows_and_ratios_are_consistent(demo_data, tmp_path):
    from comparison.compare import ModelSpec, Timing, compare, load_models, ratios

    dense = Darknet(DEMO_CFG)
    dense.save_weights(tmp_path / "dense.weights")
    from prune import PruneSettings, prune_model, write_pruned

    slim, report = prune_model(dense, PruneSettings(0.5))
    files = write_pruned(slim, report, tmp_path / "p")
    specs = [ModelSpec.parse(f"dense={DEMO_CFG},{tmp_path / 'dense.weights'}"),
             ModelSpec.parse(f"slim={files.cfg},{files.weights}")]
    models = load_models(specs)
    assert list(models) == ["dense", "slim"]
    rows = compare(models, demo_data, "eager", 64, timing=Timing(2, 0)).rows
    q = ratios(rows)
    assert q[0] == {"params": 1, "gflops": 1, "latency": 1, "size": 1,
                    "map50_delta": 0, "map_delta": 0}
    assert q[1]["params"] == pytest.approx(rows[1].params / rows[0].params)
    assert q[1]["latency"] == pytest.approx(rows[1].latency_ms / rows[0].latency_ms)
    assert q[1]["map50_delta"] == pytest.approx(rows[1].map50 - rows[0].map50)
    assert rows[1].params == sum(p.numel() for p in models["slim"].parameters())
    assert {r.runtime for r in rows} == {"eager"}
    # the size is the .weights file's, counted without writing one
    for row, path in zip(rows, (tmp_path / "dense.weights", files.weights), strict=True):
        assert row.size_mb == path.stat().st_size / 2**20


def test_compare_rejects_models_with_different_class_counts(tmp_path):
    from comparison.compare import ModelSpec, compare

    with pytest.raises(UserError, match="different class counts"):
        compare({"a": Darknet(DEMO_CFG), "b": Darknet(TINY)}, tmp_path / "never-read.yaml")
    with pytest.raises(UserError, match="NAME=CFG,WEIGHTS or NAME=FILE"):
        ModelSpec.parse("just-a-name")


@pytest.mark.e2e
def test_bad_workflow_input_exits_2(tmp_path):
    proc = run_main("sparse", "--penalty", "l1", "--s", "-0.1", "--out", tmp_path / "s")
    assert proc.returncode == 2 and "--s must be >= 0, got -0.1" in proc.stderr
    proc = run_main("sparse", "--penalty", "l1", "--optimizer", "adamw", "--out", tmp_path / "s")
    assert proc.returncode == 2 and "sparse training needs --optimizer sgd" in proc.stderr
    proc = run_main("sparse", "--out", tmp_path / "s")  # target: the cut must be named
    assert proc.returncode == 2 and "give --ratio (channels), --layers" in proc.stderr
    Darknet(TINY).save_weights(tmp_path / "tiny.weights")
    proc = run_main("finetune", "--cfg", DEMO_CFG, "--weights", tmp_path / "tiny.weights",
                    "--out", tmp_path / "f")
    assert proc.returncode == 2 and "expects" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_tiny_pipeline_writes_every_artefact_and_resumes(demo_data, tmp_path):
    out = tmp_path / "pipe"
    args = ["pipeline", "--out", out, "--data", demo_data, "--img-size", 64,
            "--dense-epochs", 1, "--sparse-epochs", 1, "--finetune-epochs", 1,
            "--workers", 0]
    proc = run_main(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path in ["dense/best.weights", "dense/last.pt", "dense/results.csv",
                 "dense/results.png", "sparse/last.weights", "sparse/gamma_hist.png",
                 "sparse/results.png", "prune/pruned.cfg", "prune/pruned.weights",
                 "prune/prune_report.json", "prune/prune_report.png", "finetune/best.weights",
                 "finetune/results.png", "ship/pruned.onnx", "ship/pruned-int8.onnx",
                 "compare/compare.md", "compare/compare.json",
                 "compare/compare.png", "pipeline.json"]:
        assert (out / path).is_file(), path
    table = json.loads((out / "compare" / "compare.json").read_text())
    assert [m["name"] for m in table["models"]] == ["dense", "sparse", "pruned", "finetuned",
                                                    "onnx-fp32", "onnx-int8"]
    assert table["models"][4]["params"] < table["models"][3]["params"]  # BN folded
    assert table["models"][2]["params"] < table["models"][0]["params"]
    assert table["runtime"] == "onnxruntime"
    report = json.loads((out / "prune" / "prune_report.json").read_text())
    assert report["settings"]["flops_exponent"] == 0.1  # the pipeline passes prune's default
    # a second run skips every stage; other settings in the same folder are refused
    again = run_main(*args)
    assert again.returncode == 0 and again.stdout.count("skipped") == 6
    other = run_main(*args[:-2], "--ratio", "0.3")
    assert other.returncode == 2 and "other settings (ratio" in other.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("argv,message", [
    (["--ratio", "1"], "--ratio must be in [0, 1), got 1"),
    (["--flops-exponent", "2"], "--flops-exponent must be in [0, 1], got 2"),
    (["--layers", "99"], "--layers 99 is more than the 7 removable blocks of cfgs/demo.cfg "
                         "(identity-residual [res2net] blocks and Darknet residual units; "
                         "main.py analyze lists them)"),
    (["--layers", "auto"], "--layers auto needs a budget (--target-gflops, --target-params or "
                           "--target-latency) to choose the number of blocks for"),
    (["--target-gflops", "0.2x", "--ratio", "0.4"],
     "--ratio and --target-gflops exclude each other: the budget search chooses the ratio"),
    (["--cfg", "tests/cfgs/tiny-darknet.cfg"],
     "--layers 2 is more than the 0 removable blocks of tests/cfgs/tiny-darknet.cfg "
     "(identity-residual [res2net] blocks and Darknet residual units; main.py analyze lists "
     "them); the pipeline's --layers 2 was chosen on the demo: give --layers 0 (or fewer) for "
     "this cfg")],
    ids=lambda v: v[0] if isinstance(v, list) else None)
def test_pipeline_refuses_bad_prune_settings_before_training(tmp_path, argv, message):
    out = tmp_path / "pipe"
    proc = run_main("pipeline", "--out", out, *argv)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {message}"
    assert not out.exists()


def test_pipeline_passes_blocks_budgets_and_ranking_to_prune_and_records_them(tmp_path,
                                                                             monkeypatch):
    import commands.pipeline as pipeline
    from commands import parse_args
    from commands.prune import settings_of
    from prune import PruneSettings

    argv = ["pipeline", "--out", str(tmp_path / "pipe"), "--target-gflops", "0.2x", "--layers",
            "auto", "--ranking", "latency", "--latency-exponent", "0.5", "--round-to", "8",
            "--penalty", "target", "--distill"]
    args = parse_args(argv)
    prune_argv = pipeline.stage_argv("prune", args, pipeline.Paths(tmp_path / "pipe"))
    assert "--ratio" not in prune_argv  # the search chooses it
    sparse_argv = pipeline.stage_argv("sparse", args, pipeline.Paths(tmp_path / "pipe"))
    assert sparse_argv[sparse_argv.index("--penalty") + 1] == "target"
    assert settings_of(parse_args(sparse_argv)) == settings_of(parse_args(prune_argv))
    finetune_argv = pipeline.stage_argv("finetune", args, pipeline.Paths(tmp_path / "pipe"))
    assert "--teacher-weights" in finetune_argv  # --distill
    prune_args = parse_args(prune_argv)
    assert settings_of(prune_args) == PruneSettings(  # ratio: the CLI's unset 0
        ratio=0.0, target_gflops="0.2x", layers="auto", ranking="latency", latency_exponent=0.5,
        round_to=8)
    assert prune_args.img_size == 128
    plain = pipeline.stage_argv("prune", parse_args(["pipeline"]), pipeline.Paths(tmp_path))
    assert settings_of(parse_args(plain)) == PruneSettings(  # the demo's budget, ratio searched
        **{**pipeline.DEMO_PRUNE, "ratio": 0.0}, **pipeline.DEMO_BUDGET)

    monkeypatch.setattr(pipeline, "_run_stage", lambda *a: 3)  # stop at the first stage
    assert args._run(args) == 3
    settings = json.loads((tmp_path / "pipe" / "pipeline.json").read_text())["settings"]
    assert {k: settings[k] for k in ("target_gflops", "layers", "ranking", "latency_exponent",
                                     "round_to", "target_latency")} == {
        "target_gflops": "0.2x", "layers": "auto", "ranking": "latency",
        "latency_exponent": 0.5, "round_to": 8, "target_latency": None}


@pytest.mark.parametrize("argv,budget", [
    ([], ("target_params", "0.14x")), (["--ratio", "0.5"], None),
    (["--target-gflops", "0.3x"], ("target_gflops", "0.3x")),
    (["--target-params", "0.2x"], ("target_params", "0.2x"))])
def test_the_demo_budget_holds_unless_a_ratio_or_another_budget_is_given(argv, budget):
    from commands import parse_args
    from commands.pipeline import prune_settings

    settings = prune_settings(parse_args(["pipeline", *argv]))
    chosen = settings.budget
    assert (chosen and (chosen.metric.flag[2:].replace("-", "_"), str(chosen))) == budget
    assert settings.layers == 2 and settings.ranking == "latency"


def tiny_pipeline_argv(out, data, dense_epochs=1):
    return ["pipeline", "--out", str(out), "--data", str(data), "--img-size", "64",
            "--dense-epochs", str(dense_epochs), "--sparse-epochs", "1",
            "--finetune-epochs", "1", "--workers", "0"]


def finished_stages(out):
    return list(json.loads((out / "pipeline.json").read_text())["stages"])


@pytest.mark.e2e
def test_pipeline_killed_in_its_first_stage_continues_the_dense_run(demo_data, tmp_path):
    """kill -9 in the dense stage after its first epoch, then the same command: the dense
    run continues from its last completed epoch (to the bytes an uninterrupted `main.py
    train` writes) and the pipeline finishes."""
    from helpers import kill_when

    from engine.checkpoint import load_checkpoint

    out = tmp_path / "pipe"
    argv = tiny_pipeline_argv(out, demo_data, dense_epochs=2)
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(out / "dense" / "last.pt", proc)
    done = load_checkpoint(out / "dense" / "last.pt")["epoch"]
    assert done == 1 and finished_stages(out) == []  # the manifest came first
    again = run_main(*argv)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming {out / 'dense'} after epoch {done}" in again.stdout
    assert finished_stages(out) == ["dense", "sparse", "prune", "finetune", "ship", "compare"]
    assert (out / "compare" / "compare.json").is_file()
    plain = tmp_path / "plain"
    assert run_main("train", "--cfg", DEMO_CFG, "--epochs", 2, "--data", demo_data,
                    "--img-size", 64, "--workers", 0, "--out", plain).returncode == 0
    for name in ("last.weights", "best.weights"):
        assert (plain / name).read_bytes() == (out / "dense" / name).read_bytes(), name


@pytest.mark.e2e
def test_pipeline_killed_in_a_middle_and_in_its_last_stage_continues(demo_data, tmp_path,
                                                                      monkeypatch, capsys):
    import common.io
    import engine.writer
    import main
    import shipping.formats
    import shipping.timing

    out = tmp_path / "pipe"
    argv = tiny_pipeline_argv(out, demo_data)
    real_save, real_write = engine.writer.save_checkpoint, common.io.atomic_write_text

    def no_sparse_checkpoint(path, state):  # killed in the sparse stage's first epoch
        if path.parent.name == "sparse":
            raise KeyboardInterrupt
        real_save(path, state)

    def no_prune_entry(path, text):  # killed after prune, before the manifest says so
        if path.name == "pipeline.json" and "prune" in json.loads(text)["stages"]:
            raise KeyboardInterrupt
        real_write(path, text)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    for module, name, fault, stages in [
            (engine.writer, "save_checkpoint", no_sparse_checkpoint, ["dense"]),
            (common.io, "atomic_write_text", no_prune_entry, ["dense", "sparse"]),
            (shipping.formats, "gate_int8", interrupted,  # ship: the INT8 export, after
             ["dense", "sparse", "prune", "finetune"]),  # the FP32 one
            (shipping.timing, "measure_latency", interrupted,  # compare, after its mAPs
             ["dense", "sparse", "prune", "finetune", "ship"])]:
        with monkeypatch.context() as m:
            m.setattr(module, name, fault)
            assert main.main(argv) == 130
        assert finished_stages(out) == stages
        printed = capsys.readouterr()
        assert "interrupted; the same command continues from here" in printed.err
        if stages == ["dense"]:
            assert {p.name for p in (out / "sparse").iterdir()} == {"model.cfg", "run.json"}
        if stages == ["dense", "sparse"]:  # sparse started over in its folder
            assert "[sparse] $ python main.py sparse" in printed.out
            assert "--resume" not in printed.out
        if stages[-1] == "finetune":  # prune ran again over its own outputs
            assert "[prune] $ python main.py prune" in printed.out
        if stages[-1] == "ship":  # ship started over: both exports again
            assert printed.out.count("[ship] $ python main.py export") == 2
    assert main.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("done before") == 5 and "[compare] $ python main.py compare" in printed
    table = json.loads((out / "compare" / "compare.json").read_text())
    assert [m["name"] for m in table["models"]] == ["dense", "sparse", "pruned", "finetuned",
                                                    "onnx-fp32", "onnx-int8"]
    assert table["models"][4]["params"] < table["models"][3]["params"]  # BN folded


@pytest.mark.parametrize("text, message", [
    ("{not json", "pipeline.json: not a readable pipeline manifest (Expecting property name"),
    ('["a list"]', "pipeline.json: not a pipeline manifest (needs 'settings' and 'stages')")])
def test_a_corrupt_manifest_is_one_line_naming_it(tmp_path, text, message):
    out = tmp_path / "pipe"
    out.mkdir()
    (out / "pipeline.json").write_text(text)
    proc = run_main("pipeline", "--out", out)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {out / 'pipeline.json'}") and message in proc.stderr


def test_a_folder_holding_only_a_killed_manifest_write_is_a_new_pipeline(tmp_path):
    from commands.pipeline import Paths, _load_manifest

    root = tmp_path / "pipe"
    root.mkdir()
    (root / ".pipeline.json.k2j4.tmp").write_text("{")
    assert _load_manifest(Paths(root), {"ratio": 0.5}) == {"settings": {"ratio": 0.5},
                                                           "stages": {}}
    (root / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty and holds no pipeline.json"):
        _load_manifest(Paths(root), {"ratio": 0.5})
