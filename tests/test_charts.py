"""The report charts: fed hand-made data, their ticks, labels and lines are where they must be;
written by tiny runs, they are PNGs of the promised size; a drawing failure never stops a run."""

from __future__ import annotations

import io
import itertools
import json
import logging
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image

import charts

DEMO_CFG = ROOT / "cfgs" / "demo.cfg"
pytestmark = pytest.mark.filterwarnings("error")  # a matplotlib warning is a chart bug


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(charts, "_WARNED", set())


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    image.verify()  # a complete, valid PNG
    assert image.format == "PNG"
    return image.size


def assert_round_ticks(ticks, lo, hi):
    """Evenly spaced at 1, 2, 2.5 or 5 x 10^k, each an integer multiple of that spacing."""
    ticks = [t for t in ticks if lo - 1e-12 <= t <= hi + 1e-12]
    assert len(ticks) >= 2, ticks
    step = ticks[1] - ticks[0]
    assert np.allclose(np.diff(ticks), step), ticks
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5, 10)) < 1e-9, (step, ticks)
    assert np.allclose(np.asarray(ticks) / step, np.round(np.asarray(ticks) / step)), ticks


def test_round_ticks_checker_rejects_the_old_charts_ticks():
    assert_round_ticks([0.0, 0.05, 0.1, 0.15], 0, 0.16)
    with pytest.raises(AssertionError):  # what the Pillow chart printed (issue 14)
        assert_round_ticks([0.0271, 0.0603, 0.0936, 0.127], 0.02, 0.13)
    with pytest.raises(AssertionError):  # round spacing, but off the grid
        assert_round_ticks([0.01, 0.06, 0.11], 0, 0.12)


# ---------------------------------------------------------------------------- matplotlib stays out


@pytest.mark.e2e  # main.py --help in a subprocess
def test_cli_help_and_the_library_do_not_import_matplotlib():
    probe = """
import runpy, sys
sys.argv = ["main.py", "--help"]
try:
    runpy.run_path("main.py", run_name="__main__")
except SystemExit:
    pass
import darknet, prune, charts, comparison.compare, sparsity.hook, engine.trainer
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib")
import charts.compare  # the detector works: a chart module does load it
print(loaded, "matplotlib.figure" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[] True"


# ---------------------------------------------------------------------------- compare.png


def compare_report(*models):
    return {"img_size": 128, "runtime": "folded", "threads": 2, "reference": models[0][0],
            "models": [dict(name=n, map50=a, map=b, gflops=g, latency_ms=ms)
                       for n, a, b, g, ms in models]}


def label_boxes(fig):
    from matplotlib.text import Annotation, Text

    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        labels = [t for t in ax.texts if isinstance(t, Annotation)]
        for t in labels:
            t.update_positions(renderer)  # the text alone, without its leader line:
        out.append((ax, labels, [Text.get_window_extent(t, renderer) for t in labels]))
    return out


def marker_centres(ax):
    pts = [xy for line in ax.lines if line.get_marker() not in ("None", None, "")
           for xy in line.get_xydata()]
    return ax.transData.transform(pts)


def test_compare_labels_of_two_models_at_nearly_the_same_point_do_not_overlap():
    from charts import compare

    fig = compare.figure(compare_report(("dense", 0.9769, 0.6786, 0.145, 9.22),
                                        ("sparse", 0.9761, 0.6780, 0.1451, 9.23),
                                        ("pruned", 0.0008, 0.0002, 0.042, 7.03),
                                        ("finetuned", 0.9752, 0.6617, 0.042, 6.92)))
    half = compare.MARKER * fig.dpi / 72 / 2
    for ax, labels, boxes in label_boxes(fig):
        assert [t.get_text() for t in labels] == ["dense", "sparse", "pruned", "finetuned"]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), (a, b)
        for box in boxes:
            assert ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1)
            for cx, cy in marker_centres(ax):
                assert not (box.x0 < cx + half and cx - half < box.x1
                            and box.y0 < cy + half and cy - half < box.y1), (box, cx, cy)
        lo, hi = ax.get_xlim()
        assert_round_ticks(ax.get_xticks(), lo, hi)
        assert_round_ticks(ax.get_yticks(), *ax.get_ylim())


def test_compare_crowded_labels_are_displaced_with_leader_lines():
    from charts import compare
    from charts.labels import DIRECTIONS, RINGS

    same = [(f"model{k}", 0.9, 0.6, 0.1, 5.0) for k in range(len(DIRECTIONS) + 2)]
    fig = compare.figure(compare_report(*same))
    for _, labels, boxes in label_boxes(fig):
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b)
        displaced = [max(map(abs, t.xyann)) > RINGS[0] for t in labels]
        assert [t.arrow_patch is not None for t in labels] == displaced
        assert not displaced[0] and all(displaced[len(DIRECTIONS):])  # the first ring is full


def test_compare_reference_lines_are_the_first_model():
    from charts import compare

    fig = compare.figure(compare_report(("dense", 0.8, 0.5, 0.2, 10.0),
                                        ("slim", 0.7, 0.4, 0.05, 4.0)))
    for ax in fig.axes:
        flat = sorted({line.get_ydata()[0] for line in ax.lines
                       if line.get_linestyle() in ("--", ":")})
        assert flat == [0.5, 0.8]


def test_compare_chart_is_deterministic_and_of_its_size():
    report = compare_report(("dense", 0.8, 0.5, 0.2, 10.0), ("slim", 0.7, 0.4, 0.05, 4.0))
    first, second = charts.render("compare", report), charts.render("compare", report)
    assert first == second
    from charts import compare

    assert png_size(first) == compare.SIZE


# ---------------------------------------------------------------------------- gamma_hist.png


def bn_with(gammas):
    bn = torch.nn.BatchNorm2d(len(gammas))
    with torch.no_grad():
        bn.weight.copy_(torch.as_tensor(gammas))
    return bn


def gamma_history(n_epochs, ratio=0.3):
    from sparsity.stats import EDGES, gamma_stats

    g = torch.Generator().manual_seed(0)
    epochs = []
    for e in range(n_epochs):
        bns = [bn_with(torch.rand(40, generator=g) * 0.5 ** e - 0.1),
               bn_with(torch.rand(24, generator=g) * 2)]
        s = gamma_stats(bns, 0.01, ratio)
        epochs.append({"epoch": e + 1, **s.as_dict(), "histogram": list(s.histogram)})
    return {"edges": list(EDGES), "epochs": epochs}, bns


def test_gamma_cut_is_the_quantile_at_the_ratio_and_the_chart_draws_it_there():
    from charts import gamma_hist

    stats, last_bns = gamma_history(3, ratio=0.3)
    gammas = np.concatenate([bn.weight.detach().abs().numpy() for bn in last_bns])
    cut = stats["epochs"][-1]["cut"]
    assert cut == pytest.approx(np.quantile(gammas, 0.3), rel=1e-6)
    assert np.mean(gammas < cut) == pytest.approx(0.3, abs=1 / len(gammas))

    fig = gamma_hist.figure(stats)
    ax = fig.axes[0]
    lines = [line for line in ax.lines if line.get_label().startswith("~ratio 0.3 cut")]
    assert len(lines) == 1
    assert lines[0].get_xdata()[0] == pytest.approx(cut)
    assert ax.get_xscale() == "log"
    below = stats["epochs"][-1]["below"]
    assert f"epoch 3: {below:.0%} below 0.01" in ax.get_title()


@pytest.mark.parametrize("n,shown", [(4, [1, 2, 3, 4]), (10, [1, 3, 5, 8, 10]),
                                     (100, [1, 26, 51, 75, 100])])
def test_gamma_legend_names_every_epoch_when_few_else_first_middle_last(n, shown):
    from charts import gamma_hist

    epochs = [{"epoch": e + 1, "histogram": [1 / 40] * 40, "count": 8, "below": 0.0,
               "threshold": 0.01} for e in range(n)]
    fig = gamma_hist.figure({"edges": list(np.logspace(-4, 1, 41)), "epochs": epochs})
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert names == [f"epoch {e}" for e in shown]  # no cut stored: no line drawn


@pytest.mark.e2e  # runs main.main
def test_sparse_cli_refuses_a_bad_prune_ratio(tmp_path, capsys):
    import main

    assert main.main(["sparse", "--penalty", "l1", "--prune-ratio", "1",
                      "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == "error: --prune-ratio must be in [0, 1), got 1.0\n"
    assert not (tmp_path / "s").exists()


def test_pipeline_passes_its_ratio_to_sparse_as_the_drawn_cut():
    from commands import build_parser
    from commands.pipeline import Paths, stage_argv

    args = build_parser().parse_args(["pipeline", "--penalty", "l1", "--ratio", "0.3"])
    argv = stage_argv("sparse", args, Paths(ROOT / "runs" / "x"))
    assert build_parser().parse_args(argv).prune_ratio == 0.3


# ---------------------------------------------------------------------------- results.png


def history(n, eval_every=1):
    return [{"epoch": e, "loss": 9 / e, "loss_box": 4 / e, "loss_obj": 3 / e, "loss_cls": 2 / e,
             "loss_distill": 0.5 / e, "lr": 0.01 * (1 - e / (n + 1)),
             "map50": 0.9 - 0.5 / e if e % eval_every == 0 else None,
             "map": 0.6 - 0.4 / e if e % eval_every == 0 else None} for e in range(1, n + 1)]


def test_results_chart_draws_every_loss_part_the_evaluated_maps_and_lr():
    from charts import results

    fig = results.figure(history(9, eval_every=3))
    loss_ax, map_ax, lr_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["loss (total)", "box", "obj", "cls",
                                                            "distill"]
    by_label = {line.get_label(): line for line in map_ax.lines}
    assert list(by_label["mAP@.5:.95"].get_xdata()) == [3, 6, 9]
    assert list(by_label["mAP@.5:.95"].get_ydata()) == pytest.approx([0.6 - 0.4 / e
                                                                     for e in (3, 6, 9)])
    assert list(lr_ax.lines[0].get_xdata()) == list(range(1, 10))
    assert "epoch 9" in map_ax.get_title()
    for ax in fig.axes:
        xticks = [t for t in ax.get_xticks() if 0.5 <= t <= 9.5]
        assert all(float(t).is_integer() for t in xticks)
        assert_round_ticks(ax.get_yticks(), *ax.get_ylim())


def test_results_chart_of_one_unevaluated_epoch():
    png = charts.render("results", history(1, eval_every=2))
    from charts import results

    assert png_size(png) == results.SIZE


# ---------------------------------------------------------------------------- prune_report.png


def row(index, kind, before, after, width=None, scale=None, prunable=True, chain=None):
    return {"index": index, "kind": kind, "out_before": before, "out_after": after,
            "width_before": width[0] if width else None,
            "width_after": width[1] if width else None,
            "scale": scale, "prunable": prunable, "chain": chain}


def hand_made_report(**extra):
    return {"settings": {"ratio": 0.5, "flops_exponent": 0.1, "scope": "all"},
            **extra, "params_before": 1000,
            "params_after": 400, "gflops_before": 0.2, "gflops_after": 0.08, "img_size": 64,
            "layers": [row(0, "convolutional", 8, 4),
                       row(1, "convolutional", 16, 8, chain=1),
                       row(2, "res2net", 16, 8, width=(4, 2), scale=4, chain=1),
                       row(3, "res2net", 16, 8, width=(4, 3), scale=4, chain=1),
                       row(4, "shortcut", 16, 8, prunable=False),
                       row(5, "triangle", 24, 12, width=(6, 3), scale=4),
                       row(6, "convolutional", 18, 18, prunable=False),
                       row(7, "yolo", 18, 18, prunable=False)]}


def test_prune_chart_slots_are_the_prunable_layers_in_cfg_order():
    from charts import prune_report

    slots = prune_report.slots(hand_made_report())
    assert [(s.index, s.before, s.after, s.groups, s.chain) for s in slots] == [
        (0, 8, 4, 1, None), (1, 16, 8, 1, 1), (2, 16, 8, 4, 1), (3, 16, 12, 4, 1),
        (5, 24, 12, 4, None)]
    fig = prune_report.figure(hand_made_report())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0 conv", "1 conv", "2 r2n",
                                                           "3 r2n", "5 tri"]
    assert [t.get_text() for t in ax.texts] == ["16→8"]  # one residual chain, led by layer 1
    assert_round_ticks(ax.get_yticks(), *ax.get_ylim())


def test_prune_chart_marks_removed_blocks_when_the_report_has_them():
    from charts import prune_report

    removed = [{"layer": 3, "layers": [3], "bn": "layers.3.bn3"},
               {"layer": 9, "layers": [9, 10], "bn": "layers.10.bn"}]  # not a row: a new slot
    report = hand_made_report(removed_blocks=removed)
    slots = prune_report.slots(report)
    assert [(s.index, s.removed, s.after) for s in slots] == [
        (0, False, 4), (1, False, 8), (2, False, 8), (3, True, 0), (5, False, 12),
        (9, True, 0)]
    fig = prune_report.figure(report)
    hatched = [p for p in fig.axes[0].patches if p.get_hatch()]
    assert sorted(round(p.get_x() + p.get_width() / 2) for p in hatched) == [3, 5]  # slots
    tallest = max(s.before for s in slots)  # struck out over the whole height, seen at any width
    assert [p.get_height() for p in hatched] == [tallest, tallest]
    assert "2 blocks removed" in fig.texts[0].get_text()
    assert "removed block" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert png_size(charts.render("prune_report", report)) == prune_report.size(6)
    plain = prune_report.figure(hand_made_report())
    assert not [p for p in plain.axes[0].patches if p.get_hatch()]


def test_prune_chart_title_is_the_command_that_chose_the_cut():
    from charts import prune_report

    assert prune_report.figure(hand_made_report()).texts[0].get_text().startswith(
        "prune --ratio 0.5 --flops-exponent 0.1 --scope all\n")
    chosen = {"ratio": 0.43, "flops_exponent": 0.1, "scope": "all", "layers": 3,
              "ranking": "latency", "latency_exponent": 1.0, "target_gflops": "0.3x"}
    title = prune_report.figure(hand_made_report(settings=chosen)).texts[0].get_text()
    assert title.startswith("prune --target-gflops 0.3x --ratio 0.43 --layers 3 --ranking "
                            "latency --latency-exponent 1 --scope all\n")


# ---------------------------------------------------------------------------- written by runs


def train(demo_data, out, hooks=(), epochs=2):
    from darknet import Darknet
    from engine.data import build_data
    from engine.trainer import TrainConfig, Trainer
    from yolodata import load_spec

    torch.manual_seed(0)
    config = TrainConfig(epochs=epochs, batch_size=4, img_size=64, ema=False, seed=0)
    trainer = Trainer(Darknet(DEMO_CFG), build_data(load_spec(demo_data), 64), config, out,
                      hooks=list(hooks), progress=False)
    trainer.fit()
    return trainer


@pytest.mark.slow  # trains two epochs
def test_a_sparse_run_writes_results_and_gamma_charts(demo_data, tmp_path):
    from charts import gamma_hist, results
    from sparsity.hook import SparsityHook
    from sparsity.penalty import SparsitySchedule

    train(demo_data, tmp_path, [SparsityHook(SparsitySchedule(0.01), prune_ratio=0.4)])
    assert png_size((tmp_path / "results.png").read_bytes()) == results.SIZE
    assert png_size((tmp_path / "gamma_hist.png").read_bytes()) == gamma_hist.SIZE
    stats = json.loads((tmp_path / "gamma_stats.json").read_text())
    assert [e["cut_ratio"] for e in stats["epochs"]] == [0.4, 0.4]
    # the picture is the one its JSON draws
    assert (tmp_path / "gamma_hist.png").read_bytes() == charts.render("gamma_hist", stats)


@pytest.mark.slow  # trains two epochs
def test_a_failing_chart_is_one_warning_and_the_run_goes_on(demo_data, tmp_path, monkeypatch,
                                                             caplog):
    from charts import results

    def broken(history):
        raise RuntimeError("no fonts\nhere")

    monkeypatch.setattr(results, "figure", broken)
    (tmp_path / "results.png").write_bytes(b"stale")
    with caplog.at_level(logging.WARNING, logger="charts"):
        trainer = train(demo_data, tmp_path, epochs=2)
    assert len(trainer.history) == 2 and (tmp_path / "results.csv").is_file()
    assert not (tmp_path / "results.png").exists()  # no picture that disagrees with the csv
    assert [r.getMessage() for r in caplog.records] == [
        "warning: results.png not drawn (RuntimeError: no fonts here)"]  # once, on one line


def test_prune_writes_its_chart_beside_the_report(tmp_path):
    from charts import prune_report
    from darknet import Darknet
    from prune import PruneSettings, prune_model, write_pruned
    from prune.importance import randomize_gammas

    model = Darknet(DEMO_CFG).eval()
    randomize_gammas(model, 0)
    slim, report = prune_model(model, PruneSettings(0.5))
    files = write_pruned(slim, report, tmp_path)
    data = json.loads(files.report.read_text())
    n = len(prune_report.slots(data))
    assert png_size(files.chart.read_bytes()) == prune_report.size(n)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "prune_report.json", "prune_report.png", "pruned.cfg", "pruned.weights"]
    rows = {r["index"]: r for r in data["layers"]}
    # demo.cfg: layer 1 is the first stage conv, layer 2 its res2net block (one chain)
    assert (rows[1]["chain"], rows[2]["chain"], rows[2]["scale"]) == (1, 1, 4)
    assert rows[0]["chain"] is None and rows[0]["prunable"]
    assert not rows[max(rows)]["prunable"]  # the last layer is a [yolo] head


def test_compare_writes_its_chart(tmp_path):
    from charts import compare
    from comparison.compare import Row, write_report

    rows = [Row("dense", 0.9, 0.6, 1000, 0.145, 9.2, 0.8, 4.8, "onnxruntime"),
            Row("slim", 0.89, 0.58, 300, 0.042, 6.9, 0.8, 1.1, "onnxruntime")]
    paths = write_report(rows, 64, "folded", tmp_path)
    assert png_size(paths["png"].read_bytes()) == compare.SIZE
    assert paths["png"].read_bytes() == charts.render(
        "compare", json.loads(paths["json"].read_text()))


def test_docs_pictures_copies_both_or_neither(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import pictures
    finally:
        sys.path.pop(0)
    run, dest = tmp_path / "run", tmp_path / "docs"
    dest.mkdir()
    (run / "compare").mkdir(parents=True)
    (run / "compare" / "compare.png").write_bytes(b"c")
    assert pictures.main([str(run), "--to", str(dest)]) == 2
    assert "prune_report.png not found" in capsys.readouterr().err
    assert list(dest.iterdir()) == []
    (run / "prune").mkdir()
    (run / "prune" / "prune_report.png").write_bytes(b"p")
    assert pictures.main([str(run), "--to", str(dest)]) == 0
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == {"compare.png": b"c",
                                                                "prune_report.png": b"p"}


@pytest.mark.e2e  # main.main in a subprocess
def test_prune_without_matplotlib_writes_everything_but_its_chart(tmp_path):
    out = tmp_path / "p"
    code = ("import sys; sys.modules['matplotlib'] = None; import main; "
            f"sys.exit(main.main(['prune', '--cfg', 'tests/cfgs/tiny-res2net.cfg', "
            f"'--random-gammas', '0', '--ratio', '0.5', '--out', {str(out)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stderr.splitlines()  # one line, no traceback
    assert line.startswith("warning: prune_report.png not drawn (ModuleNotFoundError: ")
    assert sorted(p.name for p in out.iterdir()) == ["prune_report.json", "pruned.cfg",
                                                     "pruned.weights"]
    assert "prune_report.png" not in proc.stdout
