"""Starting from pretrained weights: cutoff files (`main.py partial`) and transfer to another
class count, checked tensor by tensor against the source model and a fresh initialisation."""

from __future__ import annotations

import pytest
import torch
from helpers import ROOT, randomize_bn

import main
from darknet import Darknet, WeightsError
from darknet.transfer import cutoff_from_name, load_start_weights
from darknet.weights import storage_tensors
from engine.loss import init_detection_biases

DEMO = ROOT / "cfgs" / "demo.cfg"
CUTOFF = 20  # inside the demo backbone: some layers with weights on each side


def trained(cfg=DEMO, seed=1) -> Darknet:
    """A model whose every tensor differs from any initialisation (a stand-in for training)."""
    torch.manual_seed(seed)
    model = randomize_bn(Darknet(cfg), seed)
    with torch.no_grad():
        for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.weight.normal_()
            if conv.bias is not None:
                conv.bias.normal_()
    return model


def fresh(cfg=DEMO, seed=0) -> Darknet:
    """What a training run builds before loading: seeded init plus the detection biases."""
    torch.manual_seed(seed)
    model = Darknet(cfg)
    init_detection_biases(model, 128)
    return model


def layer_tensors(model: Darknet, index: int) -> list[torch.Tensor]:
    return [t for conv, bn in model.layers[index].conv_bn_pairs()
            for t in storage_tensors(conv, bn)]


def weighted(model: Darknet) -> list[int]:
    return [i for i, layer in enumerate(model.layers) if layer.conv_bn_pairs()]


def same(a: Darknet, b: Darknet, index: int) -> bool:
    return all(torch.equal(x, y) for x, y in zip(layer_tensors(a, index), layer_tensors(b, index),
                                                 strict=True))


def two_class_cfg(tmp_path):
    text = DEMO.read_text().replace("classes=4", "classes=2").replace("filters=27", "filters=21")
    path = tmp_path / "demo-2class.cfg"
    path.write_text(text)
    return path


def test_partial_file_loads_its_layers_bit_equal_and_leaves_the_rest(tmp_path, capsys):
    source = trained()
    source.save_weights(tmp_path / "trained.weights")
    out = tmp_path / f"backbone.conv.{CUTOFF}"
    assert main.main(["partial", "--cfg", str(DEMO), "--weights", str(tmp_path / "trained.weights"),
                      "--cutoff", str(CUTOFF), "--out", str(out)]) == 0
    assert f"layers 0-{CUTOFF - 1}" in capsys.readouterr().out
    model, untouched = fresh(), fresh()
    start = load_start_weights(model, out)  # the cutoff comes from the name
    assert start.cutoff == CUTOFF and start.cutoff_from_name
    assert "cutoff from the file name" in start.describe()
    before = [i for i in weighted(model) if i < CUTOFF]
    after = [i for i in weighted(model) if i >= CUTOFF]
    assert before and after
    assert all(same(model, source, i) and not same(model, untouched, i) for i in before)
    assert all(same(model, untouched, i) and not same(model, source, i) for i in after)
    assert model.header.seen == 0


def test_a_cutoff_that_does_not_fit_the_file_names_both_counts(tmp_path):
    path = tmp_path / "part.weights"
    trained().save_weights(path, cutoff=CUTOFF)
    model = fresh()
    reference = [t.clone() for t in model.state_dict().values()]
    with pytest.raises(WeightsError, match=rf"cutoff {CUTOFF + 4} needs \d+ floats .* the file "
                                           rf"holds \d+: what cutoff (\d+ to )?{CUTOFF} needs"):
        load_start_weights(model, path, cutoff=CUTOFF + 4)
    assert all(torch.equal(a, b) for a, b in zip(reference, model.state_dict().values(),
                                                 strict=True))
    with pytest.raises(WeightsError, match=r"pass --cutoff \d+ to load those"):
        load_start_weights(model, path)  # no cutoff: a strict whole-model load, with a hint
    misnamed = tmp_path / f"part.conv.{CUTOFF + 4}"
    misnamed.write_bytes(path.read_bytes())
    with pytest.raises(WeightsError, match=f"cutoff {CUTOFF + 4} needs"):
        load_start_weights(model, misnamed)


def test_cutoff_is_read_only_from_a_conv_n_suffix():
    assert cutoff_from_name("weights/darknet53.conv.74") == 74
    assert cutoff_from_name("yolov3.weights") is None
    assert cutoff_from_name("model.conv.74.bak") is None


def test_transfer_loads_every_non_head_layer_and_reinitialises_the_heads(tmp_path):
    source = trained()
    source.save_weights(tmp_path / "four.weights")
    cfg = two_class_cfg(tmp_path)
    with pytest.raises(WeightsError, match=r"classes 4 -> 2\): pass --transfer"):
        load_start_weights(fresh(cfg), tmp_path / "four.weights")
    model, untouched = fresh(cfg), fresh(cfg)
    start = load_start_weights(model, tmp_path / "four.weights", transfer=True)
    heads = {h.sources[0] for h in model.yolo_layers}
    assert set(start.reinitialised) == heads and len(heads) == 3
    layers = weighted(model)
    assert start.describe().endswith(f"transferred {len(layers) - 3}/{len(layers)} layers; "
                                     f"re-initialised 3 head convs (layers "
                                     f"{', '.join(map(str, sorted(heads)))}): classes 4 -> 2")
    for i in layers:
        if i in heads:
            assert same(model, untouched, i)
        else:
            assert same(model, source, i) and not same(model, untouched, i)


def test_transfer_of_a_file_for_the_same_heads_loads_everything(tmp_path):
    source = trained()
    source.save_weights(tmp_path / "w.weights")
    model = fresh()
    start = load_start_weights(model, tmp_path / "w.weights", transfer=True)
    assert start.reinitialised == () and start.describe() is None
    assert all(same(model, source, i) for i in weighted(model))


def test_transfer_refuses_a_file_for_another_network(tmp_path):
    trained(ROOT / "tests" / "cfgs" / "tiny-res2net.cfg").save_weights(tmp_path / "other.weights")
    with pytest.raises(WeightsError, match="fit .* with no \\[yolo\\] head size"):
        load_start_weights(fresh(), tmp_path / "other.weights", transfer=True)


@pytest.mark.e2e
def test_train_starts_from_a_cutoff_file_and_says_so(make_demo_data, tmp_path, capsys):
    data = make_demo_data(seed=2, n_train=4, n_val=2)
    trained().save_weights(tmp_path / f"b.conv.{CUTOFF}", cutoff=CUTOFF)
    argv = ["train", "--cfg", str(DEMO), "--data", str(data), "--epochs", "1", "--img-size", "64",
            "--batch-size", "2", "--no-progress", "--out", str(tmp_path / "run"),
            "--weights", str(tmp_path / f"b.conv.{CUTOFF}")]
    assert main.main(argv) == 0
    assert f"loaded layers 0-{CUTOFF - 1} (cutoff from the file name)" in capsys.readouterr().out
    assert main.main([*argv[:-4], "--out", str(tmp_path / "run2"), "--weights",
                      str(tmp_path / f"b.conv.{CUTOFF}"), "--cutoff", "30"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cutoff 30 needs" in err
    assert main.main(["train", "--transfer", "--out", str(tmp_path / "run3")]) == 2
    assert "give --weights" in capsys.readouterr().err
