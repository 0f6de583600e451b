"""`main.py analyze`: which channels a cfg couples, and which of them pruning may remove."""

import json

HELP = "show the groups of coupled channels of a cfg and whether each may be pruned"
DESCRIPTION = """Read a Darknet .cfg and print its groups of coupled channels: channels that an
element-wise add ties together (shortcuts, the Res2Net identity residual and cumulative
adds) and that pruning must therefore keep or remove together. Each group lists its members
(the BatchNorm, or the conv when it has no BN, with the channel range), the convs that read
it, and whether it is prunable: with --scope all, with --scope inner (residual chains left
alone) or not at all (no BatchNorm gamma, or read by a [yolo] head). Then the splits that need
equal widths: every [res2net]/[triangle] block keeps one width for all its groups, and a
[route] with groups= keeps its chunks equally wide.

example:
  python main.py analyze --cfg cfgs/res2net-yolov3.cfg
  python main.py analyze --cfg tests/cfgs/tiny-res2net.cfg --json"""


def add_arguments(p):
    p.add_argument("--cfg", required=True, help="Darknet .cfg file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")


def _prunable(group) -> str:
    if group.fixed:
        return f"not prunable: {group.fixed}"
    if group.residual:
        return "prunable with --scope all (residual chain; --scope inner leaves it)"
    return "prunable"


def _member(space, start, size) -> dict:
    return {"layer": space.layer_index, "type": space.kind, "role": space.role,
            "bn": space.bn, "conv": space.conv, "channels": [start, start + size]}


def as_dict(analysis) -> dict:
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
    }


def text(analysis) -> str:
    d = as_dict(analysis)
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
    return "\n".join(lines)


def run(args) -> int:
    from darknet import parse_cfg
    from prune import analyze

    analysis = analyze(parse_cfg(args.cfg))
    print(json.dumps(as_dict(analysis)) if args.json else text(analysis))
    return 0
