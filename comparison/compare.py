"""Dense vs pruned, side by side: accuracy, size, compute and measured CPU latency.

Latency is measured by ``shipping.timing.measure_latency`` (median of batch-1 forward passes,
the models timed in turns, NMS apart), every model in the same runtime
(``shipping.backends``: eager, BN folded, TorchScript or onnxruntime).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import charts
from common.errors import UserError
from common.io import atomic_write_text
from darknet import Darknet, parse_cfg
from darknet.cost import network_cost


@dataclass(frozen=True)
class ModelSpec:
    """``NAME=CFG,WEIGHTS`` from the command line."""

    name: str
    cfg: str
    weights: str

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        name, sep, rest = text.partition("=")
        parts = rest.split(",")
        if not sep or not name or len(parts) != 2 or not all(parts):
            raise UserError(f"--model expects NAME=CFG,WEIGHTS, got {text!r}")
        return cls(name, parts[0], parts[1])


@dataclass(frozen=True)
class Row:
    name: str
    map50: float
    map: float
    params: int
    gflops: float
    latency_ms: float  # median forward pass, batch 1, NMS excluded
    nms_ms: float  # median postprocess (score filter + NMS) on the model's own outputs
    weights_mb: float


def load_models(specs: Sequence[ModelSpec]) -> list[Darknet]:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"model names must be unique, got {names}")
    models = []
    for spec in specs:
        cfg = parse_cfg(spec.cfg)
        cfg.require_heads("main.py compare")
        model = Darknet(cfg)
        model.load_weights(spec.weights)
        models.append(model.eval())
    classes = {s.name: m.num_classes for s, m in zip(specs, models, strict=True)}
    if len(set(classes.values())) > 1:
        raise UserError(f"models detect different class counts, cannot compare: {classes}")
    return models


def build_rows(specs: Sequence[ModelSpec], models: Sequence[Darknet], maps: Sequence,
               latencies: Sequence[tuple[float, float]], img_size: int) -> list[Row]:
    costs = [network_cost(model.cfg, img_size, img_size) for model in models]
    return [
        Row(spec.name, res.map50, res.map, cost.params, cost.gflops, fwd, nms,
            Path(spec.weights).stat().st_size / 2**20)
        for spec, cost, res, (fwd, nms) in zip(specs, costs, maps, latencies, strict=True)
    ]


def ratios(rows: Sequence[Row]) -> list[dict[str, float]]:
    """Each row against the first (the dense reference): size/cost ratios and mAP deltas."""
    ref = rows[0]
    return [{
        "params": r.params / ref.params,
        "gflops": r.gflops / ref.gflops,
        "latency": r.latency_ms / ref.latency_ms,
        "weights": r.weights_mb / ref.weights_mb,
        "map50_delta": r.map50 - ref.map50,
        "map_delta": r.map - ref.map,
    } for r in rows]


def format_markdown(rows: Sequence[Row], img_size: int, runtime: str) -> str:
    head = ("| model | mAP@.5 | mAP@.5:.95 | params | GFLOPs | latency ms | NMS ms | .weights MB "
            "| params × | GFLOPs × | latency × | size × |")
    lines = [head, "|" + "---|" * 12]
    for r, q in zip(rows, ratios(rows), strict=True):
        lines.append(
            f"| {r.name} | {r.map50:.4f} | {r.map:.4f} | {r.params:,} | {r.gflops:.3f} "
            f"| {r.latency_ms:.2f} | {r.nms_ms:.2f} | {r.weights_mb:.2f} | {q['params']:.3f} "
            f"| {q['gflops']:.3f} | {q['latency']:.3f} | {q['weights']:.3f} |")
    threads = torch.get_num_threads()
    lines.append(f"\nInput {img_size}x{img_size}; latency: CPU, batch 1, "
                 f"{threads} thread{'s' * (threads != 1)}, {runtime} form, median; "
                 f"× = ratio to {rows[0].name}.")
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[Row], img_size: int, runtime: str,
                 out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"md": out / "compare.md", "json": out / "compare.json", "png": out / "compare.png"}
    report = {"img_size": img_size, "runtime": runtime, "threads": torch.get_num_threads(),
              "reference": rows[0].name,
              "models": [{**asdict(r), "ratios": q}
                         for r, q in zip(rows, ratios(rows), strict=True)]}
    atomic_write_text(paths["md"], format_markdown(rows, img_size, runtime))
    atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    charts.write_chart(paths["png"], "compare", report)  # mAP against GFLOPs and latency
    return paths
