"""The latency table's onnxruntime side: the single-conv graphs compute the conv they stand
for, measuring fills the cache once, and `prune --ranking latency` reuses it.

Nothing here asserts how fast anything is (tests never time things): only that each shape is
measured once, and that what is measured is the right graph.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from helpers import ROOT
from onnx.numpy_helper import to_array

import main
from darknet.layers import make_activation
from prune.latency import ConvShape, LatencyTable, cache_file
from prune.op_timing import conv_model, fingerprint, measure_convs, ort_measurer
from shipping.backends import ort_session

TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"


@pytest.mark.parametrize("activation", ["linear", "leaky", "relu", "logistic", "mish", "swish"])
def test_the_single_conv_graph_is_the_conv(activation):
    shape = ConvShape(5, 7, 3, 2, 1, 12, 10, activation)
    data = conv_model(shape, seed=3)
    x = np.random.default_rng(0).random((1, 5, 12, 10), dtype=np.float32)
    got = ort_session(data, threads=1).run(None, {"x": x})[0]
    weights = {t.name: torch.from_numpy(to_array(t).copy()) for t in onnx.load_from_string(data)
               .graph.initializer}
    conv = torch.nn.functional.conv2d(torch.from_numpy(x), weights["w"], weights["b"],
                                      stride=2, padding=1)
    want = make_activation(activation)(conv)
    assert got.shape == (1, 7, 6 * 5)
    np.testing.assert_allclose(got, want.flatten(2).numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(got).max() > 1e-3


def test_measuring_gives_one_positive_median_per_shape():
    shapes = [ConvShape(8, 8, 3, 1, 1, 16, 16, "leaky"), ConvShape(8, 16, 1, 1, 0, 16, 16,
                                                                   "linear")]
    times = measure_convs(shapes, threads=1)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_the_fingerprint_names_machine_runtime_and_threads():
    fp = fingerprint(2)
    assert set(fp) == {"runtime", "cpu", "isa", "cores", "onnxruntime", "threads"}
    assert fp["threads"] == "2" and fp != fingerprint(1)


def test_an_onnxruntime_table_is_measured_once(tmp_path):
    shapes = [ConvShape(4, 8, 3, 1, 1, 8, 8, "leaky"), ConvShape(8, 4, 1, 1, 0, 8, 8, "linear")]
    table = LatencyTable.cached(ort_measurer(1), tmp_path)
    table.ensure(shapes)
    assert table.measured == 3  # two shapes and the overhead
    again = LatencyTable.cached(ort_measurer(1), tmp_path)
    again.ensure(shapes)
    assert again.measured == 0 and again.ms(shapes[0]) == table.ms(shapes[0])


@pytest.mark.e2e
def test_prune_ranking_latency_measures_once_then_reads_the_cache(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("RES2NET_YOLO_CACHE", str(tmp_path / "cache"))
    argv = ["prune", "--cfg", str(TINY), "--random-gammas", "0", "--ratio", "0.5", "--ranking",
            "latency", "--round-to", "2"]
    assert main.main([*argv, "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    path = cache_file(fingerprint(torch.get_num_threads()), tmp_path / "cache" / "latency")
    assert path.exists() and len(json.loads(path.read_text())["convs"]) > 10
    assert main.main([*argv, "--out", str(tmp_path / "b")]) == 0
    second = capsys.readouterr().out
    assert "latency table: 0 measured now" in second and "latency table: 0" not in first
    assert "(--ratio 0.5, --ranking latency --latency-exponent 1, --scope all)" in second
    report = [json.loads((tmp_path / d / "prune_report.json").read_text()) for d in "ab"]
    assert report[0]["kept"] == report[1]["kept"]
    assert report[0]["settings"]["ranking"] == "latency"


@pytest.mark.e2e
def test_prune_to_a_latency_budget_measures_the_result_in_onnxruntime(tmp_path, capsys,
                                                                      monkeypatch):
    """Whatever the timings (not asserted), the search predicts, the result is measured and
    printed beside the prediction, and the report says whether it met the budget."""
    monkeypatch.setenv("RES2NET_YOLO_CACHE", str(tmp_path / "cache"))
    code = main.main(["prune", "--cfg", str(TINY), "--random-gammas", "0", "--target-latency",
                      "0.9x", "--out", str(tmp_path / "o")])
    out, err = capsys.readouterr()
    if code == 2:  # this machine's timings (a loaded one) put every plan above the budget
        assert err.count("\n") == 1 and "is out of reach: the least this cut reaches is" in err
        assert not (tmp_path / "o" / "prune_report.json").exists()
        return
    search = json.loads((tmp_path / "o" / "prune_report.json").read_text())["search"]
    assert code == 0 and search["metric"] == "latency" and 1 <= len(search["rounds"]) <= 3
    assert all(r["predicted_ms"] > 0 and r["measured_ms"] > 0 for r in search["rounds"])
    assert search["figure"] == search["rounds"][-1]["measured_ms"]
    assert search["met"] == (search["figure"] <= search["limit"])
    assert search["limit"] == pytest.approx(0.9 * search["dense"])
    assert out.count("measured in onnxruntime:") == len(search["rounds"])
    assert ("warning: measured" in out) == (not search["met"])
