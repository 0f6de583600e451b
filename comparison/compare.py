"""Dense vs pruned, side by side: accuracy, size, compute and measured CPU latency.

Latency is measured by ``shipping.timing.measure_latency`` (median of batch-1 forward passes,
the models timed in turns, NMS apart), every model in the same runtime
(``shipping.backends``: eager, BN folded, TorchScript, onnxruntime or OpenVINO).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import charts
from common.artefacts import COMPARE_CHART, COMPARE_JSON, COMPARE_MD
from common.errors import UserError
from common.io import write_together
from darknet import Darknet, parse_cfg
from darknet.cost import network_cost
from darknet.weights import weights_nbytes
from shipping.timing import Timing
from yolodata import DataSpec

DEFAULT_TIMING = Timing()


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


def load_models(specs: Sequence[ModelSpec]) -> dict[str, Darknet]:
    """The ``--model`` specs loaded, by name (in order)."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"model names must be unique, got {names}")
    models = {}
    for spec in specs:
        cfg = parse_cfg(spec.cfg)
        cfg.require_heads("main.py compare")
        models[spec.name] = Darknet(cfg, spec.weights).eval()
    return models


def build_rows(models: Mapping[str, Darknet], maps: Sequence,
               latencies: Sequence[tuple[float, float]], img_size: int) -> list[Row]:
    """One row per model; the size is that of the model's ``.weights`` file."""
    costs = [network_cost(model.cfg, img_size, img_size) for model in models.values()]
    return [
        Row(name, res.map50, res.map, cost.params, cost.gflops, fwd, nms,
            weights_nbytes(model) / 2**20)
        for (name, model), cost, res, (fwd, nms) in zip(models.items(), costs, maps, latencies,
                                                        strict=True)
    ]


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`: one :class:`Row` per model, the first the reference."""

    rows: tuple[Row, ...]
    img_size: int
    runtime: str
    skipped: tuple[tuple[str, str], ...] = ()  # (image, reason) of unreadable images left out

    @property
    def markdown(self) -> str:
        return format_markdown(self.rows, self.img_size, self.runtime)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``compare.md``, ``compare.json`` and ``compare.png`` in ``out_dir``."""
        return write_report(self.rows, self.img_size, self.runtime, out_dir)


def compare(models: Mapping[str, Darknet], data: str | Path | DataSpec = "demo",
            runtime: str = "onnxruntime", img_size: int | None = None, batch_size: int = 32,
            timing: Timing = DEFAULT_TIMING, workers: int = 0) -> Comparison:
    """Evaluate every model of ``models`` (name -> ``Darknet``, the first the reference) on
    the val split of ``data`` (as ``engine.evaluator.evaluate`` reads it) at ``img_size``
    (default: the first cfg's height), and time them in turns in the same ``runtime`` form
    (``shipping.backends.model_backend``) on the first readable image. Runs on the CPU."""
    from engine.data import EpochLoader, load_data
    from engine.evaluator import evaluate_batches
    from shipping import timing as latency
    from shipping.backends import model_backend

    if not models:
        raise UserError("compare needs at least one model")
    if workers < 0:
        raise UserError(f"workers must be >= 0, got {workers}")
    if timing.runs < 1 or timing.warmup < 0:
        raise UserError(f"runs must be >= 1 and warmup >= 0, got {timing.runs}, "
                        f"{timing.warmup}")
    classes = {name: m.num_classes for name, m in models.items()}
    if len(set(classes.values())) > 1:
        raise UserError(f"models detect different class counts, cannot compare: {classes}")
    first = next(iter(models.values()))
    img_size = img_size or first.cfg.net.height
    loaded = load_data(data, img_size, first.num_classes, train=False)
    loader = EpochLoader(loaded.val, batch_size, shuffle=False, workers=workers)
    maps = [evaluate_batches(model, loader, loaded.names) for model in models.values()]
    # the first readable image (the loader leaves out any that failed to decode)
    image = next(iter(EpochLoader(loaded.val, 1, shuffle=False, workers=0))).images
    backends = [model_backend(model.eval(), runtime, image) for model in models.values()]
    latencies = latency.measure_latency(backends, image, timing)
    return Comparison(tuple(build_rows(models, maps, latencies, img_size)), img_size, runtime,
                      loaded.skipped)


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
    """``compare.md``, ``.json`` and ``.png`` of one comparison, written together
    (``common.io.write_together``, the table last): the chart (~1 s to draw) is drawn first,
    so a kill or a failure leaves the earlier set whole, never a new table beside an old
    chart. A chart that cannot be drawn (one warning) removes the old one."""
    out = Path(out_dir)
    paths = {"md": out / COMPARE_MD, "json": out / COMPARE_JSON, "png": out / COMPARE_CHART}
    report = {"img_size": img_size, "runtime": runtime, "threads": torch.get_num_threads(),
              "reference": rows[0].name,
              "models": [{**asdict(r), "ratios": q}
                         for r, q in zip(rows, ratios(rows), strict=True)]}
    png = charts.render("compare", report)  # mAP against GFLOPs and latency
    if png is None:
        paths["png"].unlink(missing_ok=True)
    markdown = format_markdown(rows, img_size, runtime).encode("utf-8")
    report_text = (json.dumps(report, indent=2) + "\n").encode("utf-8")
    write_together([*([(paths["png"], lambda f: f.write(png))] if png is not None else []),
                    (paths["json"], lambda f: f.write(report_text)),
                    (paths["md"], lambda f: f.write(markdown))])
    return paths
