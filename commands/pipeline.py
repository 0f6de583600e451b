"""`main.py pipeline`: train dense -> sparse -> prune -> finetune -> ship -> compare,
resumable."""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from commands.export import CALIB_IMAGES
from commands.train import add_wait_argument, out_locked
from common.artefacts import (
    BEST_WEIGHTS,
    INT8_STEM,
    LAST_WEIGHTS,
    MODEL_CFG,
    PIPELINE_MANIFEST,
    PRUNED_CFG,
    PRUNED_WEIGHTS,
)
from common.lock import LOCK_NAME
from prune.settings import PruneSettings
from prune.settings import add_arguments as add_prune_settings

HELP = ("run the whole workflow (default: on the demo): train, sparse, prune, finetune, ship, "
        "compare")
DESCRIPTION = """Run every step of the slimming workflow as the same `main.py` commands a user
would type (each is printed before it runs), each stage in its own folder under --out:

  dense/     main.py train      dense model                  (best.weights)
  sparse/    main.py sparse     L1 on prunable gammas        (last.weights, gamma_hist.png;
                                (--penalty target: fades out  with --penalty target the
                                the planned cut)              plan marked)
  prune/     main.py prune      blocks, then channels out    (pruned.cfg, pruned.weights,
                                                               prune_report.json/.png)
  finetune/  main.py finetune   the slim model recovers      (best.weights)
  ship/      main.py export     the finetuned model as it    (pruned.onnx, pruned-int8.onnx)
                                ships: ONNX FP32, and INT8
                                (refused above --max-map-drop)
  compare/   main.py compare    dense, sparse, pruned, finetuned, and the shipped files
                                scored and timed as they run (compare.md/.json/.png)

Interrupted at any moment (ctrl-C, kill -9), the same command continues: --out's
pipeline.json (written before the first stage) lists the finished stages, which are skipped;
a training stage continues from its last completed epoch; prune, ship and compare start
over. The manifest also keeps the settings, and a run with different ones is refused. A
second pipeline on the same --out while one runs is refused, naming its pid (--wait: wait
for it).

--penalty target tells the sparse stage the prune stage's flags: it fades out exactly the
channels and blocks they remove (`main.py sparse --penalty target`), so the cut costs (almost)
no mAP; on the demo the faded model itself kept less than the L1 recipe's fine-tune wins back
(docs/results.md), so the default stays network slimming's L1. --distill fine-tunes with the
dense model as teacher.

With no arguments: the demo cfg on the built-in demo dataset, 26 to 45 minutes on 2 CPU
cores. Its prune stage is the demo's default, chosen on the demo: remove 2 blocks, then
channels ranked by the onnxruntime latency they cost, until at most 0.14x of the parameters
are left (--layers 2 --ranking latency --target-params 0.14x); --ratio or another --target-*
replaces the budget, --layers 0 keeps every block.

examples:
  python main.py pipeline
  python main.py pipeline --out runs/p30 --ratio 0.3 --layers 0 --ranking gamma
  python main.py pipeline --cfg my.cfg --data my.yaml --img-size 416 --device cuda \\
      --dense-epochs 100 --sparse-epochs 100 --finetune-epochs 50 --s 0.001 \\
      --layers 0 --target-gflops 0.3x"""

STAGES = ("dense", "sparse", "prune", "finetune", "ship", "compare")
# The prune settings a pipeline run chooses (its flags, checked before the dense stage and
# passed to its prune stage); the others keep `main.py prune`'s defaults.
PRUNE_SETTINGS = ("ratio", "layers", "flops_exponent", "ranking", "latency_exponent",
                  "target_gflops", "target_params", "target_latency", "scope", "round_to")
# Chosen on the demo (docs/results.md, "The demo pipeline"): two blocks out first (four cost 0.04
# mAP@.5 that 30 epochs did not win back), then channels ranked by the latency they save, as
# many as a parameter budget asks (a fixed ratio lands elsewhere on other sparse weights), and
# a fine-tune long enough to win the mAP back. The budget holds unless --ratio or another
# --target-* is given; without them --ratio only places the cut sparse draws on its chart.
DEMO_PRUNE = dict(layers=2, ratio=0.6, ranking="latency")
DEMO_BUDGET = dict(target_params="0.14x")
DEMO_EPOCHS = dict(finetune=30)
# --penalty target's sparse stage, chosen on the demo (docs/results.md, "Target-aware sparse
# training"): AdamW at the fine-tune's lr kept more of the mAP than sparse's SGD (0.73 against
# 0.68 mAP@.5 after 10 epochs at --ramp 0.7), and a ramp over half the epochs leaves the other
# half to train the slim network with the plan held at zero.
TARGET_SPARSE = ("--optimizer", "adamw", "--lr", "0.003", "--ramp", "0.5")


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/pipeline", help="root folder (default: runs/pipeline)")
    p.add_argument("--cfg", default="cfgs/demo.cfg", help="dense cfg (default: cfgs/demo.cfg)")
    p.add_argument("--data", default="demo", help="dataset (default: demo)")
    p.add_argument("--weights", default=None,
                   help="start the dense stage from these weights (default: random init)")
    p.add_argument("--img-size", type=int, default=128, help="input size (default: 128)")
    # --scope also chooses where sparse puts its L1
    add_prune_settings(p, PRUNE_SETTINGS, defaults=DEMO_PRUNE, unset={
        "target_params": f"{DEMO_BUDGET['target_params']} unless --ratio or another --target-* "
                         "is given"})
    p.add_argument("--penalty", choices=("target", "l1"), default="l1",
                   help="the sparse stage's penalty: l1 is network slimming's; target fades "
                        "out exactly what the prune stage will remove, so the cut is lossless, "
                        "but on the demo the faded model kept less mAP than the fine-tune after "
                        "an L1 cut wins back (docs/results.md) (default: l1)")
    p.add_argument("--s", type=float, default=0.01,
                   help="--penalty l1: sparsity rate (default: 0.01)")
    for stage, command in (("dense", "train"), ("sparse", "sparse"), ("finetune", "finetune")):
        own = DEMO_EPOCHS.get(stage)
        shown = own if own is not None else f"`main.py {command}`'s"
        p.add_argument(f"--{stage}-epochs", type=int, default=own,
                       help=f"epochs of the {stage} stage (default: {shown})")
    p.add_argument("--distill", action="store_true",
                   help="fine-tune with distillation from the dense model")
    p.add_argument("--max-map-drop", type=float, default=0.01,
                   help="ship: the INT8 file may lose at most this mAP@.5:.95 against FP32 on "
                        "the val split, else the stage stops with the two figures (default: "
                        "0.01)")
    p.add_argument("--calib-images", type=int, default=None,
                   help="ship: training images the INT8 file is calibrated on (default: "
                        f"{CALIB_IMAGES}, or every training image when there are fewer)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=None,
                   help="data loader processes (default: each command's own: 0 on CPU)")
    add_wait_argument(p)


@dataclass(frozen=True)
class Paths:
    """One folder per stage under ``root``, and the manifest beside them."""

    root: Path

    @property
    def dense(self) -> Path:
        return self.root / "dense"

    @property
    def sparse(self) -> Path:
        return self.root / "sparse"

    @property
    def prune(self) -> Path:
        return self.root / "prune"

    @property
    def finetune(self) -> Path:
        return self.root / "finetune"

    @property
    def ship(self) -> Path:
        return self.root / "ship"

    @property
    def compare(self) -> Path:
        return self.root / "compare"

    @property
    def manifest(self) -> Path:
        return self.root / PIPELINE_MANIFEST


SETTINGS = ("cfg", "data", "weights", "img_size", *PRUNE_SETTINGS, "penalty", "s",
            "dense_epochs", "sparse_epochs", "finetune_epochs", "distill", "max_map_drop",
            "calib_images")


def stage_commands(stage: str, args, p: Paths) -> list[list[str]]:
    """The `main.py` command lines of one stage, in the order they run."""
    if stage != "ship":
        return [stage_argv(stage, args, p)]
    finetuned = ["--cfg", str(p.prune / PRUNED_CFG), "--weights",
                 str(p.finetune / BEST_WEIGHTS), "--img-size", str(args.img_size)]
    return [["export", *finetuned, "--out", str(p.ship)],
            ["export", *finetuned, "--int8", "--data", args.data, "--calib-images",
             str(calib_images(args)), "--max-map-drop", str(args.max_map_drop),
             "--out", str(p.ship)]]


def calib_images(args) -> int:
    """--calib-images, or export's default of 300 capped at the training split's size."""
    if args.calib_images is not None:
        return args.calib_images
    from yolodata import load_spec

    return min(CALIB_IMAGES, len(load_spec(args.data).train))


def shipped_files(p: Paths) -> dict[str, Path]:
    """The ship stage's files, by their compare row names."""
    stem = Path(PRUNED_CFG).stem
    return {"onnx-fp32": p.ship / f"{stem}.onnx",
            "onnx-int8": p.ship / f"{stem}{INT8_STEM}.onnx"}


def stage_argv(stage: str, args, p: Paths) -> list[str]:
    """The `main.py` command line of a one-command stage (all but ship)."""
    workers = ["--workers", str(args.workers)] if args.workers is not None else []
    common = ["--data", args.data, "--img-size", str(args.img_size), *workers]
    device = ["--device", args.device] if args.device else []
    dense_cfg = str(p.dense / MODEL_CFG)
    pruned_cfg, pruned_weights = str(p.prune / PRUNED_CFG), str(p.prune / PRUNED_WEIGHTS)
    if stage == "dense":
        start = ["--weights", args.weights] if args.weights else []
        return ["train", "--cfg", args.cfg, *start, *_epochs(args.dense_epochs),
                "--out", str(p.dense), *common, *device]
    if stage == "sparse":
        if args.penalty == "l1":
            penalty = ["--penalty", "l1", "--s", str(args.s), "--scope", args.scope,
                       "--prune-ratio", str(args.ratio)]
        else:  # the plan: the very flags the prune stage gets
            penalty = ["--penalty", "target", *TARGET_SPARSE, *prune_argv(args)]
        return ["sparse", "--cfg", dense_cfg, "--weights", str(p.dense / BEST_WEIGHTS),
                *penalty, *_epochs(args.sparse_epochs),
                "--out", str(p.sparse), *common, *device]
    if stage == "prune":  # --data: BN statistics recalibrated on training images after the cut
        return ["prune", "--cfg", dense_cfg, "--weights", str(p.sparse / LAST_WEIGHTS),
                *prune_argv(args), "--data", args.data, "--img-size", str(args.img_size),
                "--out", str(p.prune)]
    if stage == "finetune":
        teacher = (["--teacher-cfg", dense_cfg, "--teacher-weights",
                    str(p.dense / BEST_WEIGHTS)] if args.distill else [])
        return ["finetune", "--cfg", pruned_cfg, "--weights", pruned_weights, *teacher,
                *_epochs(args.finetune_epochs), "--out", str(p.finetune), *common, *device]
    return ["compare",
            "--model", f"dense={dense_cfg},{p.dense / BEST_WEIGHTS}",
            "--model", f"sparse={dense_cfg},{p.sparse / LAST_WEIGHTS}",
            "--model", f"pruned={pruned_cfg},{pruned_weights}",
            "--model", f"finetuned={pruned_cfg},{p.finetune / BEST_WEIGHTS}",
            *(arg for name, path in shipped_files(p).items()
              for arg in ("--model", f"{name}={path}")),
            "--data", args.data, "--img-size", str(args.img_size), *workers,
            "--out", str(p.compare)]


def prune_argv(args) -> list[str]:
    """The prune flags of a pipeline run, as its sparse (target) and prune stages get them."""
    settings = prune_settings(args)
    names = [n for n in PRUNE_SETTINGS if n != "ratio" or settings.budget is None]
    return settings.argv(names)


def prune_settings(args) -> PruneSettings:
    """The prune settings of a pipeline run: its flags, and the demo's parameter budget when
    neither --ratio nor a --target-* is given."""
    settings = PruneSettings.from_args(args)
    if settings.budget is None and "ratio" not in getattr(args, "given", ()):
        return replace(settings, **DEMO_BUDGET)
    return settings


def manifest_settings(args) -> dict:
    """What pipeline.json records of a run's settings; the prune ones as settled values
    (``--round-to 8`` and ``--round-to 08`` are one setting)."""
    prune = prune_settings(args).as_dict()
    return {k: prune[k] if k in PRUNE_SETTINGS else getattr(args, k) for k in SETTINGS}


def check_prune_settings(args) -> None:
    """What the prune stage would refuse, refused before the dense stage: a bad value, --ratio
    given beside a budget, more --layers than the cfg has removable blocks."""
    from darknet import parse_cfg
    from prune import PruneError
    from prune.block_cut import check_block_count
    from prune.blocks import find_blocks

    settings = prune_settings(args)
    if settings.budget is not None and "ratio" in getattr(args, "given", ()):
        raise PruneError(f"--ratio and {settings.budget.metric.flag} exclude each other: the "
                         "budget search chooses the ratio")
    if isinstance(settings.layers, int) and settings.layers:
        cfg = parse_cfg(args.cfg)
        try:
            check_block_count(settings.layers, find_blocks(cfg), cfg)
        except PruneError as e:
            if "layers" in getattr(args, "given", ()):
                raise
            raise PruneError(f"{e}; the pipeline's --layers {settings.layers} was chosen on "
                             "the demo: give --layers 0 (or fewer) for this cfg") from None


def _epochs(epochs: int | None) -> list[str]:
    return ["--epochs", str(epochs)] if epochs is not None else []


def _load_manifest(p: Paths, settings: dict) -> dict:
    """The manifest of ``p.root``: read (and its settings checked), or a new one for a
    folder that is missing or empty."""
    from common.errors import UserError

    if p.manifest.exists():
        manifest = _read_manifest(p.manifest)
        if manifest["settings"] != settings:
            first = next(k for k in settings if manifest["settings"].get(k) != settings[k])
            raise UserError(f"{p.root} holds a pipeline run with other settings ({first}: "
                            f"{manifest['settings'].get(first)!r} there, {settings[first]!r} "
                            "now); choose another --out")
        return manifest
    if p.root.exists() and any(not _is_manifest_temp(e) and e.name != LOCK_NAME
                               for e in p.root.iterdir()):
        raise UserError(f"{p.root} is not empty and holds no pipeline.json; choose another "
                        "--out")
    return {"settings": settings, "stages": {}}


def _read_manifest(path: Path) -> dict:
    from common.errors import UserError
    from common.io import read_text

    try:
        manifest = json.loads(read_text(path, "pipeline manifest"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a readable pipeline manifest ({e}); delete it to start "
                        "over, or choose another --out") from None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("settings"), dict)
            and isinstance(manifest.get("stages"), dict)):
        raise UserError(f"{path}: not a pipeline manifest (needs 'settings' and 'stages'); "
                        "delete it to start over, or choose another --out")
    return manifest


def _is_manifest_temp(entry: Path) -> bool:
    """A temporary file of a manifest write that a kill interrupted (common.io)."""
    return entry.name.startswith(".pipeline.json.") and entry.name.endswith(".tmp")


def _run_stage(stage: str, args, p: Paths, manifest: dict, parser) -> int:
    """Run one stage (continuing its training run if it has a checkpoint); on success
    record it in the manifest."""
    from commands import parse_args
    from common.artefacts import CHECKPOINT
    from common.io import atomic_write_text

    commands = stage_commands(stage, args, p)
    if (p.root / stage / CHECKPOINT).exists():
        commands[-1].append("--resume")
    start = time.perf_counter()
    for argv in commands:
        print(f"[{stage}] $ python main.py {shlex.join(argv)}", flush=True)
        stage_args = parse_args(argv, parser)
        rc = stage_args._run(stage_args)
        if rc:
            return rc
    manifest["stages"][stage] = {
        "seconds": time.perf_counter() - start,
        "command": " && ".join(shlex.join(["python", "main.py", *argv]) for argv in commands)}
    atomic_write_text(p.manifest, json.dumps(manifest, indent=2) + "\n")
    return 0


def run(args) -> int:
    """Each stage not yet in the manifest runs; a training stage whose folder holds a
    checkpoint continues with --resume (a finished one then trains nothing), any other
    stage starts over in its folder. The manifest is written before the first stage and
    after each one, so an interruption at any moment leaves a folder the same command
    continues."""
    from common.errors import UserError

    check_prune_settings(args)  # refuse bad prune settings here, not 20 minutes later
    if not args.max_map_drop >= 0:
        raise UserError(f"--max-map-drop must be >= 0, got {args.max_map_drop}")
    if args.calib_images is not None and args.calib_images < 1:
        raise UserError(f"--calib-images must be >= 1, got {args.calib_images}")
    with out_locked(args.out, args):
        return _run_stages(args)


def _run_stages(args) -> int:
    from commands import build_parser
    from common.io import atomic_write_text, ensure_writable_dir

    p = Paths(Path(args.out))
    manifest = _load_manifest(p, manifest_settings(args))
    ensure_writable_dir(p.root)
    atomic_write_text(p.manifest, json.dumps(manifest, indent=2) + "\n")
    parser = build_parser()
    for stage in STAGES:
        if stage in manifest["stages"]:
            print(f"[{stage}] done before ({manifest['stages'][stage]['seconds']:.0f}s), "
                  "skipped")
            continue
        try:
            rc = _run_stage(stage, args, p, manifest, parser)
        except KeyboardInterrupt:
            print(f"[{stage}] interrupted; the same command continues from here",
                  file=sys.stderr)
            raise
        if rc:
            return rc
    print("\nstage wall times: " + ", ".join(
        f"{s} {manifest['stages'][s]['seconds'] / 60:.1f} min" for s in STAGES))
    print(f"table: {p.compare / 'compare.md'}")
    return 0
