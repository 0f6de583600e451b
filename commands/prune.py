"""`main.py prune`: remove the least important coupled channels, write a slim cfg + weights."""

from commands.train import add_wait_argument, out_locked
from prune.settings import add_arguments as add_settings
from prune.settings import ranking_flags

HELP = ("prune blocks and channels by BN gamma (Res2Net-aware); write pruned.cfg/.weights and "
        "a report")
DESCRIPTION = """With --layers N, first remove the N least important identity-residual blocks:
[res2net] blocks and Darknet residual units (a [shortcut] from=-3, linear, after two convs
only it reads, as in yolov3). A block's score is the mean |gamma| of the BatchNorm right
before its add (bn3 of a [res2net], the unit's last conv BN); the N lowest go (main.py
analyze lists the blocks and scores), every route and shortcut index is renumbered, and what
a removed branch still adds, act(beta) of that BN, is folded into the convs that read it.

Then rank every prunable channel by |gamma| (a coupled group by the mean over its
BatchNorms) over (its multiply-adds)^--flops-exponent, remove the lowest --ratio fraction,
and write DIR/pruned.cfg, DIR/pruned.weights, DIR/prune_report.json and DIR/prune_report.png
(kept against original channels per prunable layer, residual chains marked). Res2Net and
Triangle blocks keep one width for all their groups; residual chains are pruned as one group
(--scope all) or left alone (--scope inner). Every layer keeps at least --min-keep channels;
a removed channel's constant output act(beta) is folded into the layers that read it. The
slim model computes what the dense model computes with the removed blocks' pre-add gammas
and the removed channels' gammas set to zero (exactly where those betas are zero).

With a budget (--target-gflops, --target-params or --target-latency; an absolute figure
or a fraction of dense written 0.3x) --ratio is searched instead of given: the ratio grid
0, 0.01, ..., 0.99 is bisected for a ratio whose plan meets the budget while one grid step
less pruning would not, with no training and no model built: GFLOPs and parameters come from
the slim cfg. With --layers auto the number of blocks is searched too (the one that zeroes
the least |gamma|). Every plan tried is printed; a budget no plan meets is refused, naming
the least figure reached. A latency budget (ms, or a fraction of the dense model measured
once) is searched on a per-conv latency table measured once per machine in onnxruntime and
cached (~/.cache/res2net-yolo/latency or $RES2NET_YOLO_CACHE; the first run measures the
shapes it needs, minutes on a full-size cfg); the result is then exported and measured, and
a miss scales the prediction by measured/predicted and searches again (3 measured plans at
most; the last is written, with a warning if it still misses).

--ranking latency weighs each channel's and block's |gamma| against the latency its removal
saves (the same table) instead of its multiply-adds, so the ratio removes what buys the most
time per unit of importance.

--block-ranking sensitivity removes first the blocks whose removal raised a calibration loss
the least, as measured by main.py analyze --sensitivity (--sensitivity FILE, its
sensitivity.json, measured on the same weights) or, without a file, measured here on --data.

With --data, the slim model's BatchNorm statistics are re-estimated before it is written:
--recalibrate N images of the train split (a seeded draw, letterboxed, no augmentation) run
through it with every BN in train mode and no gradients; no weight changes (a cut shifts what
each later BN sees; the dense statistics no longer fit). Evaluation and fine-tuning then start
from the recalibrated model; the report's "recalibration" says on what.

The report's "settings" records the value of every flag above; "kept" maps each BatchNorm
(its module name in the dense model) of the layers that survive to its kept channels;
"removed_blocks" lists the removed blocks (dense layer indices, the scored BatchNorm, the
score); its "layers" rows give per cfg layer the output channels (and a block's group width
and scale) before and after, whether --scope lets the pruner cut it, and the residual chain
it is on (named by the chain's first layer).

example:
  python main.py prune --cfg cfgs/demo.cfg --weights sparse.weights --ratio 0.5 --out pruned/
  python main.py prune --cfg cfgs/res2net-yolov3.cfg --random-gammas 0 --ratio 0.5 --out /tmp/p
  python main.py prune --cfg cfgs/demo.cfg --weights sparse.weights --layers 3 --ratio 0.5 \\
      --out pruned/
  python main.py prune --cfg cfgs/res2net-yolov3.cfg --random-gammas 0 --img-size 416 \\
      --target-gflops 0.3x --layers auto --out /tmp/p
  python main.py prune --cfg cfgs/demo.cfg --weights sparse.weights --target-latency 0.5x \\
      --ranking latency --out pruned/
  python main.py prune --cfg cfgs/demo.cfg --weights sparse.weights --layers 2 --ratio 0.5 \\
      --data demo --block-ranking sensitivity --out pruned/"""

RECALIBRATE = 256  # --recalibrate's default with --data (NNCF adapts BNs on a few hundred)


def add_arguments(p):
    p.add_argument("--cfg", required=True, help="Darknet .cfg file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="Darknet .weights (sparse-trained for best results)")
    src.add_argument("--random-gammas", type=int, metavar="SEED",
                     help="no weights: random init with gammas ~ U(0, 1) (demos, benchmarks)")
    add_settings(p, unset={"ratio": "0 with --layers; searched with a --target-*; one of "
                                    "them is needed"})
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data", default=None,
                   help="data .yaml, Darknet .data file or 'demo': its train split recalibrates "
                        "the slim model's BatchNorms (--recalibrate) and, for --block-ranking "
                        "sensitivity without --sensitivity, measures the blocks (default: none)")
    p.add_argument("--recalibrate", type=int, default=None, metavar="N",
                   help="re-estimate the slim model's BatchNorm statistics on N train images "
                        f"of --data before writing it; 0: off (default: {RECALIBRATE} with "
                        "--data, else off)")
    p.add_argument("--sensitivity", default=None, metavar="FILE",
                   help="for --block-ranking sensitivity: sensitivity.json of main.py analyze "
                        "--sensitivity on the same cfg and weights (default: measure it here "
                        "on --data)")
    p.add_argument("--img-size", type=int, default=None,
                   help="input size for the GFLOPs count (default: the cfg's [net] height)")
    add_wait_argument(p)


def settings_of(args):
    """The run's :class:`~prune.settings.PruneSettings`; --ratio may be left out with --layers
    (blocks only, no channels) and must be with a budget (the search chooses it)."""
    import argparse

    from prune import PruneError, PruneSettings

    settings = PruneSettings.from_args(argparse.Namespace(**{**vars(args),
                                                             "ratio": args.ratio or 0.0}))
    if settings.budget is not None and args.ratio is not None:
        raise PruneError(f"--ratio and {settings.budget.metric.flag} exclude each other: the "
                         "budget search chooses the ratio")
    if args.ratio is None and not settings.layers and settings.budget is None:
        raise PruneError("give --ratio (channels), --layers (blocks), both, or a budget "
                         "(--target-gflops, --target-params, --target-latency)")
    return settings


def calibration_images(args, settings) -> tuple[int, int]:
    """(train images of --data to read, of them those the slim model is recalibrated on),
    once the data flags are checked against each other and the settings."""
    from common.errors import UserError
    from prune.settings import BlockRanking

    if args.recalibrate is not None and args.recalibrate < 0:
        raise UserError(f"--recalibrate must be a whole number >= 0, got {args.recalibrate}")
    by_sensitivity = settings.block_ranking is BlockRanking.SENSITIVITY
    if args.sensitivity is not None and not by_sensitivity:
        raise UserError("--sensitivity FILE is read by --block-ranking sensitivity only")
    measure = by_sensitivity and args.sensitivity is None
    if args.data is None:
        if args.recalibrate:
            raise UserError("--recalibrate needs --data (the images to recalibrate on)")
        if measure:
            raise UserError("--block-ranking sensitivity needs --sensitivity FILE (main.py "
                            "analyze --sensitivity) or --data to measure it on")
        return 0, 0
    recalibrate = RECALIBRATE if args.recalibrate is None else args.recalibrate
    return recalibrate or (RECALIBRATE if measure else 0), recalibrate


def read_sensitivity(path: str):
    """``main.py analyze --sensitivity``'s sensitivity.json as a ``prune.sensitivity``
    value."""
    import json

    from common.io import read_text
    from prune import PruneError
    from prune.sensitivity import Sensitivity

    try:
        data = json.loads(read_text(path, "--sensitivity file"))
    except json.JSONDecodeError as e:
        raise PruneError(f"{path}: not JSON ({e})") from None
    return Sensitivity.from_dict(data, path)


def table(report) -> str:
    lines = [f"{'idx':>4}  {'type':<14}{'out kept / total':>18}  {'group width':<12}"]
    for r in report.layers:
        width = f"{r.width_before} -> {r.width_after}" if r.width_before is not None else ""
        mark = "" if r.out_after == r.out_before else f"  ({r.out_after / r.out_before:.0%})"
        lines.append(f"{r.index:>4}  {r.kind:<14}{f'{r.out_after} / {r.out_before}':>18}  "
                     f"{width:<12}{mark}")
    return "\n".join(lines)


def block_lines(report) -> list[str]:
    if not report.removed_blocks:
        return []
    measured = report.settings.block_ranking == "sensitivity"
    why = ("least loss increase measured with the block removed" if measured
           else "lowest mean |gamma| of the BN before the add")
    lines = [f"removed {len(report.removed_blocks)} of {report.removable_blocks} removable "
             f"blocks ({why}):"]
    lines += [f"    layer {b.layer} [{b.kind}] layers {', '.join(map(str, b.layers))} "
              f"({b.bn}, score {b.score:.4g})" for b in report.removed_blocks]
    if report.block_folds:
        approx = sum(not n.exact for n in report.block_folds)
        lines.append(f"folded the removed blocks' act(beta) into {len(report.block_folds)} "
                     f"convs ({approx} of them kxk with padding: exact away from the border)")
    lines += [f"not folded: a removed block's constant (up to {n.max_offset:.3g}) meets {n.where}"
              for n in report.block_unfolded]
    return lines


def search_lines(search) -> list[str]:
    """The search's steps and what it chose (``prune.pipeline.SearchReport``)."""
    from prune.budget import Metric

    metric = Metric(search.metric)
    lines = [f"budget {metric.flag} {search.budget}: at most {metric.format(search.limit)} "
             f"(dense {metric.format(search.dense)}); {len(search.steps)} plans tried:"]
    verb = "predicted " if metric is Metric.LATENCY else ""
    counts = sorted({s.layers for s in search.steps})
    for n in counts:  # with --layers auto, one line per number of blocks tried
        steps = [s for s in search.steps if s.layers == n]
        if len(counts) > 1:
            met = [s for s in steps if s.meets]
            last = min(met, key=lambda s: s.ratio) if met else steps[-1]
            lines.append(f"    --layers {n}: {len(steps)} plans, {'least' if met else 'none'} "
                         f"meeting: --ratio {last.ratio:.2f} -> {verb}"
                         f"{metric.format(last.figure)} ({last.figure / search.dense:.3f}x)")
            continue
        lines += [f"    step {k + 1}: --layers {s.layers} --ratio {s.ratio:.2f} -> {verb}"
                  f"{metric.format(s.figure)} ({s.figure / search.dense:.3f}x) "
                  f"{'meets' if s.meets else 'over'}" for k, s in enumerate(steps)]
    lines += [f"    measured in onnxruntime: --layers {r.layers} --ratio {r.ratio:.2f}: "
              f"{r.measured_ms:.2f} ms (predicted {r.predicted_ms:.2f} ms)"
              for r in search.rounds]
    lines.append(f"chose --layers {search.layers} --ratio {search.ratio:.2f}: "
                 f"{metric.format(search.figure)} ({search.figure / search.dense:.3f}x of "
                 f"dense; {search.removed_gamma:.4g} |gamma| removed)")
    if not search.met:
        lines.append(f"warning: measured {metric.format(search.figure)}, over the budget "
                     f"{metric.format(search.limit)}, after {len(search.rounds)} measured "
                     f"plan(s): {search.stop}; the last plan is written (ask for more time, or "
                     "remove blocks)")
    return lines


def summary(report) -> str:
    lines = search_lines(report.search) if report.search else []
    lines += block_lines(report)
    settings = report.settings
    for f in report.floors:
        lines.append(f"floor: {f.layer}: the ratio would keep {f.wanted} of {f.size} channels; "
                     f"kept {f.kept} (--min-keep {settings.min_keep})")
    approx = sum(not n.exact for n in report.folds)
    if report.folds:
        lines.append(f"folded removed channels' act(beta) into {len(report.folds)} convs "
                     f"({approx} of them kxk with padding: exact away from the image border)")
    ranked = ranking_flags(settings.ranking, settings.flops_exponent, settings.latency_exponent)
    lines.append(f"removed {report.removed_channels} of {report.prunable_channels} prunable "
                 f"coupled channels (--ratio {settings.ratio:g}, {ranked}, "
                 f"--scope {settings.scope}); "
                 f"BN channels {report.bn_channels_before:,} -> {report.bn_channels_after:,}")
    if report.recalibration is not None:
        r = report.recalibration
        lines.append(f"recalibrated the BatchNorm statistics on {r.images} {r.split} images of "
                     f"{r.data}")
    p0, p1 = report.params_before, report.params_after
    lines.append(f"params: {p0:,} -> {p1:,} ({p1 / p0:.1%})")
    g0, g1 = report.gflops_before, report.gflops_after
    lines.append(f"GFLOPs @{report.img_size}: {g0:.4g} -> {g1:.4g} ({g1 / g0:.1%})")
    return "\n".join(lines)


def run(args) -> int:
    settings_of(args)  # a bad flag is refused before --out is created
    with out_locked(args.out, args):
        return _prune(args)


def _prune(args) -> int:
    from commands import calibration_batches, check_img_size
    from common.io import ensure_writable_dir
    from darknet import Darknet, parse_cfg
    from prune import prune_model, write_pruned
    from prune.importance import randomize_gammas
    from prune.pipeline import needs_latency, pruned_files

    settings = settings_of(args)
    check_img_size(args.img_size)
    images, recalibrate = calibration_images(args, settings)
    sensitivity = read_sensitivity(args.sensitivity) if args.sensitivity else None
    inputs = (args.cfg, *([args.weights] if args.weights else []))
    pruned_files(args.out, inputs)  # refuse to overwrite an input before any work
    ensure_writable_dir(args.out, create=False)

    model = Darknet(parse_cfg(args.cfg)).eval()
    if args.weights:
        model.load_weights(args.weights)
    else:
        randomize_gammas(model, args.random_gammas)
    img_size = args.img_size or model.cfg.net.height
    batches = (calibration_batches(args.data, model.num_classes, img_size, images)
               if images else None)
    if (sensitivity is None and batches is not None and settings.layers != 0
            and settings.block_ranking == "sensitivity"):
        sensitivity = measure_sensitivity(model, batches)
    latency = None
    if needs_latency(settings):
        from prune.op_timing import ort_context

        latency = ort_context(img_size)
        for note in latency.table.notes:
            print(note)
    slim, report = prune_model(model, settings, img_size=args.img_size, latency=latency,
                               sensitivity=sensitivity)
    report = recalibrated(slim, report, args, batches, recalibrate)
    files = write_pruned(slim, report, args.out, inputs)
    print(table(report))
    print(summary(report))
    if latency is not None:
        print(f"latency table: {latency.table.measured} measured now (the overhead "
              f"included), {len(latency.table.raw)} conv shapes in {latency.table.path}")
    chart = f", {files.chart}" if files.chart.exists() else ""
    print(f"wrote {files.cfg}, {files.weights}, {files.report}{chart}")
    return 0


def measure_sensitivity(model, batches):
    """Every block's sensitivity on ``batches``, one line per block as it is measured."""
    from prune.sensitivity import measure

    def progress(done, of, block):
        print(f"sensitivity {done}/{of}: layer {block.layer} [{block.kind}] loss "
              f"{block.loss:.4f} ({block.sensitivity:+.4f})", flush=True)

    return measure(model, batches, on_result=progress)


def recalibrated(slim, report, args, batches, images: int):
    """The report of ``slim`` once its BNs are recalibrated on ``images`` of ``batches``
    (none: ``report`` as it is)."""
    from dataclasses import replace

    from prune.recalibrate import Recalibration, recalibrate_bn

    source = None
    if report.settings.block_ranking == "sensitivity":
        source = args.sensitivity or "measured"
    if not images:
        return replace(report, sensitivity=source)
    used = recalibrate_bn(slim, (b.images for b in batches), images)
    return replace(report, recalibration=Recalibration(args.data, "train", used),
                   sensitivity=source)
