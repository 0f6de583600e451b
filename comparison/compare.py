"""Dense vs pruned, side by side: accuracy, size, compute and measured CPU latency.

Latency is measured by ``shipping.timing.measure_latency`` (median of batch-1 forward passes,
the models timed in turns, NMS apart), every Darknet model in the same runtime
(``shipping.backends``: eager, BN folded, TorchScript, onnxruntime or OpenVINO). An exported
file (``shipping.deployed``: an FP32 or INT8 ``.onnx``, an OpenVINO IR) is a row of its own,
scored and timed as it ships.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
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
from shipping.backends import Backend
from shipping.timing import Timing
from yolodata import DataSpec

DEFAULT_TIMING = Timing()


@dataclass(frozen=True)
class ModelSpec:
    """``NAME=CFG,WEIGHTS`` (a Darknet model) or ``NAME=FILE`` (an exported ``.onnx`` or
    OpenVINO ``.xml``, measured as it ships) from the command line."""

    name: str
    cfg: str | None  # None: ``weights`` is an exported file
    weights: str

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        from shipping.deployed import is_deployed

        name, sep, rest = text.partition("=")
        parts = rest.split(",")
        if sep and name and len(parts) == 1 and is_deployed(rest):
            return cls(name, None, rest)
        if not sep or not name or len(parts) != 2 or not all(parts):
            raise UserError(f"--model expects NAME=CFG,WEIGHTS or NAME=FILE.onnx|.xml, "
                            f"got {text!r}")
        return cls(name, parts[0], parts[1])

    def load(self) -> Darknet | Path:
        """The Darknet model, or the exported file's path (opened by :func:`compare`)."""
        if self.cfg is None:
            return Path(self.weights)
        cfg = parse_cfg(self.cfg)
        cfg.require_heads("main.py compare")
        return Darknet(cfg, self.weights).eval()


@dataclass(frozen=True)
class Row:
    name: str
    map50: float
    map: float
    params: int
    gflops: float
    latency_ms: float  # median forward pass, batch 1, NMS excluded
    nms_ms: float  # median postprocess (score filter + NMS) on the model's own outputs
    size_mb: float  # what ships: the .weights file, or the exported file(s)
    runtime: str  # the form the latency was measured in


def load_models(specs: Sequence[ModelSpec]) -> dict[str, Darknet | Path]:
    """The ``--model`` specs loaded, by name (in order): Darknet models, and the paths of
    exported files."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"model names must be unique, got {names}")
    return {spec.name: spec.load() for spec in specs}


@dataclass(frozen=True)
class _Form:
    """One row's model as measured: what is scored, what is timed, what it costs."""

    predictor: Darknet | Backend  # scored by engine.evaluator
    params: int
    gflops: float
    size_mb: float
    runtime: str
    timed: Callable[[torch.Tensor], Backend]  # the form timed, given the timing image


def _darknet_form(model: Darknet, runtime: str, img_size: int) -> _Form:
    from shipping.backends import model_backend

    cost = network_cost(model.cfg, img_size, img_size)
    return _Form(model, cost.params, cost.gflops, weights_nbytes(model) / 2**20, runtime,
                 lambda image: model_backend(model, runtime, image))


def _file_form(path: Path, runtime: str, img_size: int | None) -> tuple[_Form, int]:
    """The form of an exported file, and the size it runs at: ``img_size``, else (the first
    model) the file's own input size."""
    from shipping.deployed import file_bytes, graph_cost, open_deployed

    backend, img_size = open_deployed(path, runtime, img_size)
    cost = graph_cost(path, img_size)
    return _Form(backend, cost.params, cost.gflops, file_bytes(path) / 2**20, backend.name,
                 lambda image: backend), img_size


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


def compare(models: Mapping[str, Darknet | str | Path], data: str | Path | DataSpec = "demo",
            runtime: str = "onnxruntime", img_size: int | None = None, batch_size: int = 32,
            timing: Timing = DEFAULT_TIMING, workers: int = 0) -> Comparison:
    """Evaluate every model of ``models`` (name -> ``Darknet``, or the path of an exported
    ``.onnx`` / ``.xml``; the first is the reference) on the val split of ``data`` (as
    ``engine.evaluator.evaluate`` reads it) at ``img_size`` (default: the first model's
    input size), and time them in turns on the first readable image. A ``Darknet`` runs in
    the ``runtime`` form (``shipping.backends.model_backend``); an exported file is scored
    and timed as it ships (``shipping.deployed``: an ``.onnx`` in ``runtime`` when that runs
    files, else onnxruntime; an IR in OpenVINO), its params and GFLOPs counted from its
    graph. Runs on the CPU."""
    from engine.data import EpochLoader, load_data
    from engine.evaluator import evaluate_batches
    from shipping import timing as latency

    if not models:
        raise UserError("compare needs at least one model")
    if workers < 0:
        raise UserError(f"workers must be >= 0, got {workers}")
    if timing.runs < 1 or timing.warmup < 0:
        raise UserError(f"runs must be >= 1 and warmup >= 0, got {timing.runs}, "
                        f"{timing.warmup}")
    forms: dict[str, _Form] = {}
    for name, model in models.items():  # the first model settles a missing img_size
        if isinstance(model, Darknet):
            img_size = img_size or model.cfg.net.height
            forms[name] = _darknet_form(model, runtime, img_size)
        else:
            forms[name], img_size = _file_form(Path(model), runtime, img_size)
    classes = {name: f.predictor.num_classes for name, f in forms.items()}
    if len(set(classes.values())) > 1:
        raise UserError(f"models detect different class counts, cannot compare: {classes}")
    loaded = load_data(data, img_size, next(iter(classes.values())), train=False)
    loader = EpochLoader(loaded.val, batch_size, shuffle=False, workers=workers)
    maps = [evaluate_batches(f.predictor, loader, loaded.names) for f in forms.values()]
    # the first readable image (the loader leaves out any that failed to decode)
    image = next(iter(EpochLoader(loaded.val, 1, shuffle=False, workers=0))).images
    latencies = latency.measure_latency([f.timed(image) for f in forms.values()], image,
                                        timing)
    rows = tuple(Row(name, res.map50, res.map, f.params, f.gflops, fwd, nms, f.size_mb,
                     f.runtime)
                 for (name, f), res, (fwd, nms) in zip(forms.items(), maps, latencies,
                                                       strict=True))
    return Comparison(rows, img_size, runtime, loaded.skipped)


def ratios(rows: Sequence[Row]) -> list[dict[str, float]]:
    """Each row against the first (the dense reference): size/cost ratios and mAP deltas."""
    ref = rows[0]
    return [{
        "params": r.params / ref.params,
        "gflops": r.gflops / ref.gflops,
        "latency": r.latency_ms / ref.latency_ms,
        "size": r.size_mb / ref.size_mb,
        "map50_delta": r.map50 - ref.map50,
        "map_delta": r.map - ref.map,
    } for r in rows]


def format_markdown(rows: Sequence[Row], img_size: int, runtime: str) -> str:
    head = ("| model | runtime | mAP@.5 | mAP@.5:.95 | params | GFLOPs | latency ms | NMS ms "
            "| size MB | params × | GFLOPs × | latency × | size × |")
    lines = [head, "|" + "---|" * 13]
    for r, q in zip(rows, ratios(rows), strict=True):
        lines.append(
            f"| {r.name} | {r.runtime} | {r.map50:.4f} | {r.map:.4f} | {r.params:,} "
            f"| {r.gflops:.3f} | {r.latency_ms:.2f} | {r.nms_ms:.2f} | {r.size_mb:.2f} "
            f"| {q['params']:.3f} | {q['gflops']:.3f} | {q['latency']:.3f} | {q['size']:.3f} |")
    threads = torch.get_num_threads()
    lines.append(f"\nInput {img_size}x{img_size}; latency: CPU, batch 1, "
                 f"{threads} thread{'s' * (threads != 1)}, median; cfg + weights rows run in "
                 f"the {runtime} form, size: their .weights; exported-file rows are measured "
                 "in the file itself, size: the file, params and GFLOPs: its graph's "
                 f"(BatchNorm folded); × = ratio to {rows[0].name}.")
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
