"""Latency-aware pruning on hand-made tables: costs, the ranking, the cache, latency budgets.

A fake measurer stands in for onnxruntime: its milliseconds are a formula of the conv shape,
and it counts what it is asked, so the tests see exactly which shapes a search measures. The
real onnxruntime measurement is exercised in ``test_op_timing.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import ROOT, TWO_SCALES

from darknet import Darknet, parse_cfg_text
from darknet.cost import network_cost
from prune import PruneSettings, analyze, prune_model
from prune.blocks import find_blocks
from prune.importance import randomize_gammas
from prune.latency import (
    ConvShape,
    LatencyContext,
    LatencyPredictor,
    LatencyTable,
    Measurer,
    block_latency,
    cache_file,
    class_latency,
    conv_shapes,
    convs_ms,
    narrower,
)

DEMO = ROOT / "cfgs" / "demo.cfg"
TINY = ROOT / "tests" / "cfgs" / "tiny-res2net.cfg"

TWO_LAYERS = TWO_SCALES  # layer 0 at 16x16 (3x3, stride 1), layer 1 at 8x8, a 1x1 head


class FakeMeasurer(Measurer):
    """ms = ``per_mac`` * multiply-adds + 0.01 per conv; overhead 0.005; counts its calls."""

    def __init__(self, per_mac=1e-6, fingerprint=None, slow_layer0=1.0):
        self.asked: list[ConvShape] = []
        self.per_mac, self.slow_layer0 = per_mac, slow_layer0
        super().__init__(fingerprint or {"runtime": "fake", "threads": "1"}, self._convs,
                         lambda: 0.005)

    def ms(self, s: ConvShape) -> float:
        out = (s.h + 2 * s.padding - s.kernel) // s.stride + 1
        slow = self.slow_layer0 if s.h == 16 and s.stride == 1 else 1.0  # TWO_LAYERS' layer 0
        return self.per_mac * slow * s.c_in * s.c_out * s.kernel ** 2 * out * out + 0.015

    def _convs(self, shapes):
        self.asked += shapes
        return [self.ms(s) for s in shapes]


def linear_table(per_channel_pair=0.01) -> LatencyTable:
    """ms = c_in * c_out * ``per_channel_pair`` exactly (no overhead): secants are exact."""
    measurer = Measurer({"runtime": "linear"},
                        lambda shapes: [s.c_in * s.c_out * per_channel_pair for s in shapes],
                        lambda: 0.0)
    return LatencyTable(measurer)


# ---------------------------------------------------------------- pure parts

def test_narrower_stays_on_multiples_of_8():
    assert [narrower(c) for c in (1, 3, 8, 15, 16, 26, 64, 100, 1024)] == \
        [0, 1, 4, 7, 8, 16, 32, 56, 512]


def test_a_class_costs_its_producers_per_output_and_its_readers_per_input():
    """With ms = 0.01 * c_in * c_out, a conv's secant per output channel is 0.01 * c_in and
    per input channel 0.01 * c_out. Layer 0's channels: produced by a 3-input conv (0.03),
    read by layer 1's 8-output conv (0.08). Layer 1's: produced by an 8-input conv (0.08),
    read by the 18-output head (0.18)."""
    cfg = parse_cfg_text(TWO_LAYERS)
    analysis = analyze(cfg)
    cost = class_latency(analysis, linear_table(), 16)
    layer0 = analysis.classes_of_space(analysis.graph.spaces[1])
    layer1 = analysis.classes_of_space(analysis.graph.spaces[2])
    np.testing.assert_allclose(cost[layer0], 0.11)
    np.testing.assert_allclose(cost[layer1], 0.26)


def test_a_block_costs_the_time_of_its_convs():
    cfg = Darknet(TINY).cfg
    blocks = find_blocks(cfg)
    measurer = FakeMeasurer()
    table = LatencyTable(measurer)
    got = block_latency(cfg, blocks, table, 64)
    cost = network_cost(cfg, 64, 64)
    for b, ms in zip(blocks, got, strict=True):
        convs = [c for layer in cost.layers if layer.index in b.layers for c in layer.convs]
        assert {c.name for c in convs} >= {"conv1", "convs.0", "conv3"}
        assert ms == pytest.approx(sum(measurer.ms(ConvShape.of(c)) - 0.005 for c in convs))


def test_prediction_is_fitted_to_the_measured_models():
    """One measured model fixes the offset; two fix the line: a table that overrates every
    conv by 25% and leaves out 2 ms is predicted exactly from then on."""
    cfg = Darknet(TINY).cfg
    table = LatencyTable(FakeMeasurer())
    slim, _ = prune_model(randomize_gammas(Darknet(TINY), 0), PruneSettings(0.5))
    dense_ms, slim_ms = (convs_ms(table, c, 64) for c in (cfg, slim.cfg))
    truth = {id(cfg): 0.8 * dense_ms + 2.0, id(slim.cfg): 0.8 * slim_ms + 2.0}
    one = LatencyPredictor(table, 64).fitted([(cfg, truth[id(cfg)])])
    assert one.scale == 1.0 and one.predict(cfg) == pytest.approx(truth[id(cfg)])
    assert one.predict(slim.cfg) != pytest.approx(truth[id(slim.cfg)])
    two = one.fitted([(c, truth[id(c)]) for c in (cfg, slim.cfg)])
    assert (two.scale, two.offset) == (pytest.approx(0.8), pytest.approx(2.0))
    flat = one.fitted([(cfg, 5.0), (slim.cfg, 6.0)])  # slower when smaller: noise, not a line
    assert flat.scale == 1.0 and flat.predict(slim.cfg) == pytest.approx(6.0)


# ---------------------------------------------------------------- the ranking

def test_latency_ranking_cuts_the_slow_layer_first():
    """Layer 0's gammas are the higher ones, so the gamma ranking cuts layer 1; when the table
    says layer 0's convs are 20x as slow per channel, the latency ranking cuts layer 0."""
    model = Darknet(parse_cfg_text(TWO_LAYERS))
    with torch.no_grad():
        model.layers[0].bn.weight.copy_(1.0 + 0.01 * torch.arange(8))
        model.layers[1].bn.weight.copy_(0.9 + 0.001 * torch.arange(8))
    latency = LatencyContext(LatencyTable(FakeMeasurer(slow_layer0=20.0)), lambda m: 1.0)
    by_gamma = PruneSettings(0.25, min_keep=1, flops_exponent=0.0)
    _, gamma = prune_model(model, by_gamma, latency=latency)
    _, timed = prune_model(model, PruneSettings(0.25, min_keep=1, ranking="latency"),
                           latency=latency)
    assert gamma.kept["layers.0.bn"] == list(range(8))
    assert gamma.kept["layers.1.bn"] == [4, 5, 6, 7]
    assert timed.kept["layers.0.bn"] == [4, 5, 6, 7]
    assert timed.kept["layers.1.bn"] == list(range(8))


def test_latency_ranking_orders_blocks_by_gamma_per_ms():
    model = randomize_gammas(Darknet(DEMO), 0).eval()
    blocks = find_blocks(model.cfg)
    modules = dict(model.named_modules())
    with torch.no_grad():  # every block equally important: only their latency tells them apart
        for b in blocks:
            modules[b.bn].weight.fill_(0.5)
    latency = LatencyContext(LatencyTable(FakeMeasurer()), lambda m: 1.0)
    _, report = prune_model(model, PruneSettings(0.0, layers=2, ranking="latency"),
                            latency=latency)
    ms = block_latency(model.cfg, blocks, latency.table, 128)
    slowest = {blocks[i].layer for i in np.argsort(-ms, kind="stable")[:2]}
    assert {b.layer for b in report.removed_blocks} == slowest


# ---------------------------------------------------------------- the cache

def test_the_cache_round_trip_measures_nothing_the_second_time(tmp_path):
    model = randomize_gammas(Darknet(TINY), 0).eval()
    settings = PruneSettings(ratio=0.5, ranking="latency", round_to=2)
    first = FakeMeasurer()
    table = LatencyTable.cached(first, tmp_path)
    _, report = prune_model(model, settings, latency=LatencyContext(table, lambda m: 1.0))
    assert table.measured == len(first.asked) + 1 > 1  # the shapes, and the overhead
    assert len(set(first.asked)) == len(first.asked)  # none measured twice
    stored = json.loads(cache_file(first.fingerprint, tmp_path).read_text())
    assert stored["fingerprint"] == first.fingerprint and stored["overhead_ms"] == 0.005
    assert len(stored["convs"]) == len(first.asked)

    second = FakeMeasurer()
    again = LatencyTable.cached(second, tmp_path)
    _, report2 = prune_model(model, settings, latency=LatencyContext(again, lambda m: 1.0))
    assert again.measured == 0 and second.asked == []
    assert report2.kept == report.kept

    other_machine = FakeMeasurer(fingerprint={"runtime": "fake", "threads": "2"})
    fresh = LatencyTable.cached(other_machine, tmp_path)
    prune_model(model, settings, latency=LatencyContext(fresh, lambda m: 1.0))
    assert fresh.measured > 0 and cache_file(other_machine.fingerprint, tmp_path).exists()


def test_a_null_entry_in_the_cache_is_measured_again_with_a_note(tmp_path):
    """A hand edit (or another version) left ``null`` where a time was: that shape alone is
    measured again, the note says so, the rest of the cache is used as it is."""
    cfg = Darknet(TINY).cfg
    LatencyTable.cached(first := FakeMeasurer(), tmp_path).ensure(conv_shapes(cfg, 64).values())
    path = cache_file(first.fingerprint, tmp_path)
    stored = json.loads(path.read_text())
    poisoned = sorted(stored["convs"])[0]
    stored["convs"][poisoned] = None
    path.write_text(json.dumps(stored))
    again = LatencyTable.cached(second := FakeMeasurer(), tmp_path)
    assert convs_ms(again, cfg, 64) == pytest.approx(convs_ms(LatencyTable(FakeMeasurer()),
                                                               cfg, 64))
    assert [s.key for s in second.asked] == [poisoned]
    assert again.notes == [f"{path}: 1 entry not a time ({poisoned!r}: None), measured again"]
    assert json.loads(path.read_text())["convs"][poisoned] == second.ms(second.asked[0])


@pytest.mark.parametrize("garbage", [b"\x00\xff garbage", b'{"fingerprint": {"runtime": '
                                     b'"else"}, "convs": {}}', b'{"convs": [1, 2]}', b"[]"])
def test_an_unreadable_cache_is_set_aside_and_rebuilt(tmp_path, garbage):
    cfg = Darknet(TINY).cfg
    measurer = FakeMeasurer()
    path = cache_file(measurer.fingerprint, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(garbage)
    table = LatencyTable.cached(measurer, tmp_path)
    assert table.notes == [f"{path}: not a latency table of this machine; set aside as "
                           f"{path.name}.bad, measured again"]
    convs_ms(table, cfg, 64)
    assert path.with_name(path.name + ".bad").read_bytes() == garbage
    assert len(json.loads(path.read_text())["convs"]) == len(measurer.asked) > 0


# ---------------------------------------------------------------- latency budgets

def fake_runtime(table: LatencyTable, bias: float, rest: float = 0.3):
    """Whole-model 'measurements': ``bias`` x the conv sum + ``rest``; counts its calls."""
    calls = []

    def measure(model):
        calls.append(model.cfg)
        return bias * convs_ms(table, model.cfg, 128) + rest
    return measure, calls


def test_a_latency_budget_measures_and_corrects_a_miss():
    """The table overrates the convs (true time 0.8x): a plan that the offset-calibrated
    prediction puts at the limit measures over it; the corrected search cuts more."""
    model = randomize_gammas(Darknet(DEMO), 0).eval()
    table = LatencyTable(FakeMeasurer(per_mac=1e-5))
    measure, calls = fake_runtime(table, 0.8)
    _, report = prune_model(model, PruneSettings(target_latency="0.4x"),
                            latency=LatencyContext(table, measure))
    search = report.search
    assert len(calls) == 1 + len(search.rounds)  # dense once, then each measured plan
    assert search.dense == pytest.approx(0.8 * convs_ms(table, model.cfg, 128) + 0.3)
    assert len(search.rounds) >= 2 and search.rounds[0].measured_ms > search.limit
    assert search.met and search.figure == search.rounds[-1].measured_ms <= search.limit
    assert search.rounds[-1].ratio > search.rounds[0].ratio
    assert report.settings.ratio == search.rounds[-1].ratio


def test_a_latency_budget_that_measurement_keeps_missing_is_written_and_flagged():
    model = randomize_gammas(Darknet(DEMO), 0).eval()
    table = LatencyTable(FakeMeasurer(per_mac=1e-5))
    latency = LatencyContext(table, lambda m: 10.0)  # nothing pruning does shows in the time
    _, report = prune_model(model, PruneSettings(target_latency="0.6x"), latency=latency)
    assert not report.search.met and 1 <= len(report.search.rounds) <= 3
    assert report.as_dict()["search"]["met"] is False
