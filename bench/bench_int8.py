"""Does INT8 add to pruning on a CPU? Dense and slim, FP32 and INT8, in onnxruntime and OpenVINO.

    python bench/bench_int8.py [--cfg cfgs/res2net-yolov3.cfg] [--img-size 416] [--runs 20]
        [--warmup 3] [--threads N] [--calib-images N] [--round-to N] [--int8-ops conv|body]
        [--demo RUN_DIR] [--skip-416]

Four forms of one model pair, each as an ONNX graph (``shipping.onnx_export``, BN folded):
dense FP32, dense INT8, slim FP32, slim INT8 (INT8: ``shipping.quantize.quantize_onnx`` at
its default ``QuantSettings``, QDQ convs; ``--int8-ops body``: the ops between them too).
Each graph is opened in onnxruntime (``ort_session``) and in OpenVINO (the same ONNX bytes;
it runs the QDQ graph with integer kernels), and all eight are timed in turns at batch 1 on
the same image after a warm-up, NMS excluded (``measure_latency(..., nms=False)``); medians,
and each one's ratio to dense FP32 in onnxruntime. Without OpenVINO its column reads n/a.

- ``--cfg`` @``--img-size`` (default the full Res2Net-YOLOv3 @416): random weights and random
  BN gammas (latency does not depend on their values); slim is ``prune_model`` at
  ``--target-gflops 0.3x --layers auto`` (gamma ranking); INT8 calibrated on
  ``--calib-images`` random images (default 8).
- ``--demo RUN_DIR`` (what ``main.py pipeline`` wrote, e.g. runs/pipeline): its trained dense
  model (dense/) and fine-tuned slim one (prune/pruned.cfg + finetune/best.weights) at the
  run's input size (128 on the demo), INT8 calibrated as ``main.py export --int8`` does
  (``--calib-images`` training images of the run's data, default 300). Latency only: the
  pipeline's ship and compare stages measure the files' mAP.

Targets (@416, on a CPU with VNNI): slim INT8 / dense FP32 <= 0.15 in onnxruntime and
<= 0.10 in OpenVINO.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import onnxruntime  # noqa: E402
import torch  # noqa: E402

from commands.export import CALIB_IMAGES  # noqa: E402
from common.artefacts import BEST_WEIGHTS, MODEL_CFG, PIPELINE_MANIFEST, PRUNED_CFG  # noqa: E402
from common.errors import UserError  # noqa: E402
from darknet import Darknet  # noqa: E402
from prune import PruneSettings, prune_model  # noqa: E402
from prune.importance import randomize_gammas  # noqa: E402
from shipping.backends import (  # noqa: E402
    OpenVinoBackend,
    OrtBackend,
    import_openvino,
    openvino_model,
    ort_session,
)
from shipping.onnx_export import export_onnx  # noqa: E402
from shipping.quantize import (  # noqa: E402
    OP_SETS,
    QuantSettings,
    calibration_images,
    quantize_onnx,
)
from shipping.timing import Timing, measure_latency  # noqa: E402

FORMS = ("dense FP32", "dense INT8", "slim FP32", "slim INT8")
TARGETS = {"onnxruntime": 0.15, "OpenVINO": 0.10}  # slim INT8 / dense FP32 (onnxruntime)
SLIM = PruneSettings(layers="auto", target_gflops="0.3x")  # --target-gflops 0.3x --layers auto
CALIB_RANDOM, CALIB_DEMO = 8, CALIB_IMAGES  # the demo's: main.py export --int8's default


def openvino_version() -> str | None:
    try:
        return import_openvino().__version__.split("-")[0]
    except UserError:
        return None


def cpu_line() -> str:
    """The CPU's name and the int8 dot-product units its flags list."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    lines = text.splitlines()
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor() or "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    vnni = [f for f in ("avx512_vnni", "avx_vnni") if f in flags]
    amx = [f for f in ("amx_int8",) if f in flags]
    return f"CPU: {name}; VNNI: {' '.join(vnni) or 'none'}; AMX: {' '.join(amx) or 'none'}"


def graphs(dense: Darknet, slim: Darknet, calib: Sequence[torch.Tensor],
           image: torch.Tensor, settings: QuantSettings) -> list[bytes]:
    """The ONNX bytes of ``FORMS``: each model's FP32 graph, then its INT8 form."""
    files = []
    for model in (dense, slim):
        fp32 = export_onnx(model.eval(), image)
        files += [fp32, quantize_onnx(fp32, calib, settings)]
    return files


def table(title: str, dense: Darknet, slim: Darknet, calib: Sequence[torch.Tensor],
          args: argparse.Namespace, openvino: bool) -> dict[str, list[float | None]]:
    """Time ``FORMS`` in onnxruntime (and OpenVINO), all in turns; print the table and return
    the ms per runtime."""
    image = torch.rand_like(calib[0])
    files = graphs(dense, slim, calib, image, QuantSettings(ops=OP_SETS[args.int8_ops]))
    backends = [OrtBackend(ort_session(f, args.threads)) for f in files]
    if openvino:
        backends += [OpenVinoBackend(openvino_model(f), args.threads) for f in files]
    times = [t for t, _ in measure_latency(backends, image, Timing(args.runs, args.warmup),
                                           nms=False)]
    ms = {"onnxruntime": times[:4], "OpenVINO": times[4:] or [None] * 4}
    base = ms["onnxruntime"][0]

    def cell(t: float | None) -> str:
        return "n/a" if t is None else f"{t:.2f} (x{t / base:.3f})"

    print(f"\n{title}; INT8 quantizes: {args.int8_ops}; median of {args.runs}\n")
    print("| form | onnxruntime ms (x) | OpenVINO ms (x) |")
    print("|---|---|---|")
    for k, form in enumerate(FORMS):
        print(f"| {form} | {cell(ms['onnxruntime'][k])} | {cell(ms['OpenVINO'][k])} |")
    return ms


def random_pair(args: argparse.Namespace, openvino: bool, has_vnni: bool) -> None:
    torch.manual_seed(0)
    dense = randomize_gammas(Darknet(args.cfg).eval(), 0)
    settings = SLIM if args.round_to is None else replace(SLIM, round_to=args.round_to)
    slim, report = prune_model(dense, settings, args.img_size)
    size = args.img_size
    calib = [torch.rand(1, dense.cfg.net.channels, size, size)
             for _ in range(args.calib_images or CALIB_RANDOM)]
    rounded = "" if args.round_to is None else f" --round-to {args.round_to}"
    title = (f"{args.cfg} @{size}, random weights; slim: --target-gflops 0.3x --layers auto"
             f"{rounded} ({report.gflops_after:.3g} of {report.gflops_before:.3g} GFLOPs)")
    ms = table(title, dense, slim, calib, args, openvino)
    ratios = [f"{rt} " + ("n/a" if t[3] is None else f"{t[3] / ms['onnxruntime'][0]:.3f}")
              + f" (target <= {TARGETS[rt]:.2f})" for rt, t in ms.items()]
    print(f"\nslim INT8 / dense FP32: {', '.join(ratios)}, on a CPU with VNNI"
          + ("" if has_vnni else " (this CPU has none)"))


def demo_pair(args: argparse.Namespace, openvino: bool) -> None:
    from yolodata import load_spec

    run = Path(args.demo)
    files = {"dense": (run / "dense" / MODEL_CFG, run / "dense" / BEST_WEIGHTS),
             "slim": (run / "prune" / PRUNED_CFG, run / "finetune" / BEST_WEIGHTS)}
    missing = [str(p) for pair in files.values() for p in pair if not p.is_file()]
    if missing:
        raise UserError(f"--demo {run}: missing {', '.join(missing)} (run main.py pipeline)")
    manifest = run / PIPELINE_MANIFEST
    settings = json.loads(manifest.read_text())["settings"] if manifest.is_file() else {}
    size, data = settings.get("img_size", 128), settings.get("data", "demo")
    dense, slim = (Darknet(*files[k]).eval() for k in ("dense", "slim"))
    calib = calibration_images(load_spec(data).train, args.calib_images or CALIB_DEMO, size)
    table(f"{run} @{size}: dense/ and the fine-tuned slim model, INT8 calibrated on "
          f"{len(calib)} training images of {data}", dense, slim, calib, args, openvino)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default=str(ROOT / "cfgs" / "res2net-yolov3.cfg"))
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="threads (default: torch's)")
    p.add_argument("--calib-images", type=int, default=None,
                   help=f"INT8 calibration images (default: {CALIB_RANDOM} random ones for "
                        f"--cfg, {CALIB_DEMO} training images for --demo)")
    p.add_argument("--round-to", type=int, default=None,
                   help="the slim model's channel widths a multiple of this (main.py prune "
                        "--round-to; default: its auto)")
    p.add_argument("--int8-ops", choices=tuple(OP_SETS), default="conv",
                   help="what INT8 quantizes, as main.py export --int8-ops (default: conv)")
    p.add_argument("--demo", metavar="RUN_DIR", help="also time a main.py pipeline run's models")
    p.add_argument("--skip-416", action="store_true", help="time only --demo")
    args = p.parse_args()
    if args.skip_416 and not args.demo:
        p.error("--skip-416 needs --demo")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()  # every session and compiled model gets these
    ov = openvino_version()
    cpu = cpu_line()
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"openvino {ov or 'not installed'}, {args.threads} threads, batch 1")
    print(cpu)
    try:
        if not args.skip_416:
            random_pair(args, ov is not None, "VNNI: none" not in cpu)
        if args.demo:
            demo_pair(args, ov is not None)
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
