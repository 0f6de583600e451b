"""Which INT8 settings keep the mAP? A pipeline run's models quantized every way, scored.

    python bench/bench_quant.py [--run runs/pipeline] [--model slim|dense] [--calib-images 300]

The model (``--model slim``: the run's fine-tuned ``prune/pruned.cfg`` +
``finetune/best.weights``; ``dense``: ``dense/``) is exported to ONNX and quantized with
each ``QuantSettings`` variant below (``shipping.quantize``), calibrated on
``--calib-images`` training images of the run's data, and each INT8 graph's mAP on the val
split is measured in onnxruntime beside the FP32 graph's: the table of ``docs/shipping.md``
that chose ``QuantSettings``' defaults. Accuracy only (``bench_int8.py`` times the forms).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from common.artefacts import BEST_WEIGHTS, MODEL_CFG, PIPELINE_MANIFEST, PRUNED_CFG  # noqa: E402
from darknet import Darknet  # noqa: E402
from engine.data import EpochLoader, load_data  # noqa: E402
from engine.evaluator import evaluate_batches  # noqa: E402
from shipping.backends import OrtBackend, ort_session  # noqa: E402
from shipping.onnx_export import export_onnx  # noqa: E402
from shipping.quantize import (  # noqa: E402
    BODY_OPS,
    QuantSettings,
    calibration_images,
    quantize_onnx,
)
from yolodata import load_spec  # noqa: E402

SHIPPED = QuantSettings()
VARIANTS = {
    "as shipped": SHIPPED,
    "the body quantized (--int8-ops body)": replace(SHIPPED, ops=BODY_OPS),
    "percentile 99.99": replace(SHIPPED, percentile=99.99),
    "percentile 99.999": replace(SHIPPED, percentile=99.999),
    "percentile 99.9999": replace(SHIPPED, percentile=99.9999),
    "7-bit weights (reduce_range)": replace(SHIPPED, reduce_range=True),
    "MinMax": replace(SHIPPED, calibration="minmax"),
    "MinMax, 7-bit weights": replace(SHIPPED, calibration="minmax", reduce_range=True),
    "entropy": replace(SHIPPED, calibration="entropy"),
    "symmetric activations": replace(SHIPPED, symmetric_activations=True),
    "heads quantized too": replace(SHIPPED, heads=True),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/pipeline", help="a main.py pipeline --out folder")
    p.add_argument("--model", choices=("slim", "dense"), default="slim")
    p.add_argument("--calib-images", type=int, default=300)
    args = p.parse_args()
    run = Path(args.run)
    settings = json.loads((run / PIPELINE_MANIFEST).read_text())["settings"]
    size, data = settings["img_size"], settings["data"]
    files = ((run / "prune" / PRUNED_CFG, run / "finetune" / BEST_WEIGHTS)
             if args.model == "slim" else (run / "dense" / MODEL_CFG, run / "dense" / BEST_WEIGHTS))
    model = Darknet(*files).eval()
    spec = load_spec(data)
    val = EpochLoader(load_data(spec, size, model.num_classes, train=False).val, 32,
                      shuffle=False, workers=0)
    calib = calibration_images(spec.train, args.calib_images, size)
    fp32 = export_onnx(model, torch.zeros(1, 3, size, size))
    base = evaluate_batches(OrtBackend(ort_session(fp32)), val, spec.names)
    print(f"{args.model} model of {run} @{size}, {len(calib)} calibration images, "
          f"onnxruntime, {torch.get_num_threads()} threads\n")
    print("| INT8 variant | mAP@.5 | mAP@.5:.95 | drop | calibration s |")
    print("|---|---|---|---|---|")
    print(f"| FP32 | {base.map50:.4f} | {base.map:.4f} | | |")
    for name, variant in VARIANTS.items():
        start = time.perf_counter()
        int8 = quantize_onnx(fp32, calib, variant)
        seconds = time.perf_counter() - start
        res = evaluate_batches(OrtBackend(ort_session(int8)), val, spec.names)
        print(f"| {name} | {res.map50:.4f} | {res.map:.4f} | {base.map - res.map:+.4f} "
              f"| {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
