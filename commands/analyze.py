"""`main.py analyze`: which channels a cfg couples, and which of them pruning may remove."""

import json

HELP = ("show the groups of coupled channels of a cfg, whether each may be pruned, and the "
        "blocks layer pruning may remove")
DESCRIPTION = """Read a Darknet .cfg and print its groups of coupled channels: channels that an
element-wise add ties together (shortcuts, the Res2Net identity residual and cumulative
adds) and that pruning must therefore keep or remove together. Each group lists its members
(the BatchNorm, or the conv when it has no BN, with the channel range), the convs that read
it, and whether it is prunable: with --scope all, with --scope inner (residual chains left
alone) or not at all (no BatchNorm gamma, or read by a [yolo] head). Then the splits that need
equal widths: every [res2net]/[triangle] block keeps one width for all its groups, and a
[route] with groups= keeps its chunks equally wide.

Last, the blocks `main.py prune --layers N` may remove: every identity-residual [res2net]
block and every Darknet residual unit (a linear [shortcut] from=-3 after two convs only it
reads). With --weights (or --random-gammas) each gets its score, the mean |gamma| of the
BatchNorm right before its add; --layers N removes the N lowest.

With --sensitivity (needs --weights and --data) each block is also measured: cut alone (its
act(beta) folded, as prune does), the cut model's BatchNorm statistics recalibrated on --images
train images of --data (a seeded draw, no augmentation), and the YOLO loss per image measured
on the same images; a block's sensitivity is that loss less the dense model's (recalibrated
alike). --layer-ratios 0.25,0.5,0.75 measures each prunable layer too, with that share of its
channels (lowest mean |gamma| first; residual chains left out) masked: gamma and beta zeroed.
OUT/sensitivity.json holds the figures and OUT/sensitivity.png draws them, least harmful
first; `prune --block-ranking sensitivity --sensitivity OUT/sensitivity.json` removes blocks in
that order. About 2 s per block on the demo (2 cores).

example:
  python main.py analyze --cfg cfgs/demo.cfg --weights dense.weights --sensitivity --data demo
  python main.py analyze --cfg cfgs/res2net-yolov3.cfg
  python main.py analyze --cfg cfgs/demo.cfg --weights sparse.weights
  python main.py analyze --cfg tests/cfgs/tiny-res2net.cfg --json"""


def add_arguments(p):
    p.add_argument("--cfg", required=True, help="Darknet .cfg file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="Darknet .weights: score the removable blocks")
    src.add_argument("--random-gammas", type=int, metavar="SEED",
                     help="score the blocks on a random init with gammas ~ U(0, 1)")
    p.add_argument("--sensitivity", action="store_true",
                   help="measure the loss increase of removing each block (needs --weights and "
                        "--data); write OUT/sensitivity.json and .png")
    p.add_argument("--data", default=None,
                   help="data .yaml, Darknet .data file or 'demo': the calibration images of "
                        "--sensitivity come from its train split (default: none)")
    p.add_argument("--images", type=int, default=256, metavar="N",
                   help="calibration images of --sensitivity (default: 256)")
    p.add_argument("--layer-ratios", default="", metavar="R,R,..",
                   help="--sensitivity also masks each prunable layer's lowest-|gamma| share R "
                        "of its channels, for each R, e.g. 0.25,0.5,0.75 (the demo: 66 more "
                        "measurements) (default: blocks only)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="where --sensitivity runs (default: cuda when available)")
    p.add_argument("--out", default="runs/sensitivity",
                   help="folder of sensitivity.json/.png (default: runs/sensitivity)")


def layer_ratios(text: str) -> tuple[float, ...]:
    """--layer-ratios: comma-separated fractions in (0, 1), or '' for none."""
    from common.errors import UserError

    try:
        ratios = tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        ratios = (-1.0,)
    if any(not 0 < r < 1 for r in ratios):
        raise UserError(f"--layer-ratios must be fractions in (0, 1) like 0.25,0.5, got {text!r}")
    return ratios


def _prunable(group) -> str:
    if group.fixed:
        return f"not prunable: {group.fixed}"
    if group.residual:
        return "prunable with --scope all (residual chain; --scope inner leaves it)"
    return "prunable"


def _member(space, start, size) -> dict:
    return {"layer": space.layer_index, "type": space.kind, "role": space.role,
            "bn": space.bn, "conv": space.conv, "channels": [start, start + size]}


def blocks_list(blocks, scores=None) -> list[dict]:
    """Per removable block: where it is, its ``score`` and ``order`` (1: removed first), the
    last two None without scores."""
    from prune.blocks import removal_order

    order = [None] * len(blocks)
    if scores is not None:
        for position, i in enumerate(removal_order(scores), start=1):
            order[i] = position
    return [{"layer": b.layer, "kind": b.kind, "layers": list(b.layers), "bn": b.bn,
             "score": None if scores is None else float(scores[i]), "order": order[i]}
            for i, b in enumerate(blocks)]


def as_dict(analysis, blocks: list[dict]) -> dict:
    from prune import Scope

    graph = analysis.graph
    return {
        "cfg": analysis.cfg.path,
        "channels": graph.num_channels,
        "coupled_channels": analysis.num_classes,
        "prunable": {str(s): int(analysis.prunable(s).sum()) for s in Scope},
        "groups": [
            {"size": g.size, "prunable": g.fixed is None,
             "scope_all_only": g.fixed is None and g.residual, "fixed_because": g.fixed,
             "members": [_member(s, start, g.size) for s, start in g.members],
             "read_by": list(g.readers)}
            for g in analysis.groups
        ],
        "equal_widths": [
            {"layer": c.layer_index, "rule": c.reason,
             "part_widths": [len(graph.tensors[t]) for t in c.parts]}
            for c in graph.same_width
        ],
        "blocks": blocks,
    }


def _block_lines(blocks: list[dict]) -> list[str]:
    if not blocks:
        return ["", "Removable blocks (prune --layers): none."]
    scored = blocks[0]["score"] is not None
    how = ("score = mean |gamma| of the BN before the add; --layers N removes orders 1..N"
           if scored else "pass --weights to see their scores")
    lines = ["", f"Removable blocks (prune --layers): {len(blocks)}; {how}:"]
    for b in blocks:
        score = f", score {b['score']:.4g}, order {b['order']}" if scored else ""
        lines.append(f"    layer {b['layer']} [{b['kind']}] layers "
                     f"{', '.join(map(str, b['layers']))} ({b['bn']}{score})")
    return lines


def text(analysis, blocks: list[dict]) -> str:
    d = as_dict(analysis, blocks)
    lines = [
        f"{d['cfg']}: {d['channels']} produced channels; adds tie them into "
        f"{d['coupled_channels']} coupled channels "
        f"in {len(d['groups'])} groups.",
        f"Prunable: {d['prunable']['all']} coupled channels with --scope all, "
        f"{d['prunable']['inner']} with --scope inner.",
        "",
    ]
    for n, (g, gd) in enumerate(zip(analysis.groups, d["groups"], strict=True), start=1):
        lines.append(f"group {n}: {g.size} channel{'s' * (g.size != 1)}, {_prunable(g)}")
        for space, start in g.members:
            lines.append(f"    {space.label} [{start}:{start + g.size}]")
        if gd["read_by"]:
            lines.append(f"    read by {', '.join(gd['read_by'])}")
    if d["equal_widths"]:
        lines += ["", "Equal widths (a split needs equal parts):"]
        for c in d["equal_widths"]:
            widths = sorted(set(c["part_widths"]))
            lines.append(f"    layer {c['layer']}: {c['rule']}: {len(c['part_widths'])} parts "
                         f"of {', '.join(map(str, widths))} channels")
    return "\n".join(lines + _block_lines(blocks))


def _scores(args, cfg, blocks):
    if args.weights is None and args.random_gammas is None:
        return None
    from darknet import Darknet
    from prune.blocks import block_scores
    from prune.importance import randomize_gammas

    model = Darknet(cfg)
    if args.weights:
        model.load_weights(args.weights)
    else:
        randomize_gammas(model, args.random_gammas)
    return block_scores(model, blocks)


def check_sensitivity_args(args) -> None:
    from common.errors import UserError

    if not args.sensitivity:
        return
    if args.weights is None or args.data is None:
        raise UserError("--sensitivity needs --weights (the model to measure) and --data (its "
                        "calibration images)")
    if args.images < 1:
        raise UserError(f"--images must be >= 1, got {args.images}")
    layer_ratios(args.layer_ratios)


def measure(args, cfg, quiet: bool):
    """The blocks' sensitivity (``prune.sensitivity``), written to OUT; progress unless
    ``quiet``."""
    import charts
    from commands import calibration_batches
    from common.io import atomic_write_text, ensure_writable_dir
    from darknet import Darknet
    from engine.distributed import select_device
    from prune.sensitivity import BlockSensitivity, measure

    out = ensure_writable_dir(args.out)
    device = select_device(args.device)
    model = Darknet(cfg).eval()
    model.load_weights(args.weights)
    model.to(device)
    batches = calibration_batches(args.data, model.num_classes, cfg.net.height, args.images)

    def progress(done, of, r):
        if quiet:
            return
        what = (f"block at layer {r.layer} [{r.kind}] (mean |gamma| {r.gamma:.4g})"
                if isinstance(r, BlockSensitivity) else
                f"layer {r.layer} at ratio {r.ratio:g} ({r.removed} of {r.channels} channels)")
        print(f"sensitivity {done}/{of}: {what}: loss {r.loss:.4f} ({r.sensitivity:+.4f})",
              flush=True)

    result = measure(model, batches, layer_ratios(args.layer_ratios), on_result=progress)
    data = {"cfg": str(cfg.path), "weights": str(args.weights), "data": str(args.data),
            **result.as_dict()}
    atomic_write_text(out / "sensitivity.json", json.dumps(data, indent=1) + "\n")
    charts.write_chart(out / "sensitivity.png", "sensitivity", data)
    if not quiet:
        print(f"dense loss {result.dense_loss:.4f} on {result.images} images; wrote "
              f"{out / 'sensitivity.json'} and .png")
    return data


def run(args) -> int:
    from darknet import parse_cfg
    from prune import analyze
    from prune.blocks import find_blocks

    check_sensitivity_args(args)
    cfg = parse_cfg(args.cfg)
    analysis = analyze(cfg)
    found = find_blocks(cfg, analysis.graph)
    blocks = blocks_list(found, _scores(args, cfg, found))
    if not args.json:
        print(text(analysis, blocks), flush=True)
    sensitivity = measure(args, cfg, args.json) if args.sensitivity else None
    if args.json:
        print(json.dumps({**as_dict(analysis, blocks),
                          **({"sensitivity": sensitivity} if sensitivity else {})}))
    return 0
