"""`main.py sparse`: network-slimming sparse training (L1 on prunable BN gammas)."""

from __future__ import annotations

from commands import train as train_cmd

HELP = "sparse training: L1 penalty on the BatchNorm gammas that pruning can remove"
DESCRIPTION = """Train with the L1 penalty of network slimming (Liu et al., 2017): after each
backward pass, s * sign(gamma) is added to the gradient of every BatchNorm weight that the
pruning analyzer marks prunable for --scope (BNs feeding a [yolo] head, or on residual chains
under --scope inner, get no penalty). Everything else is `main.py train`: same engine, same
flags, same files in --out, plus:
  gamma_hist.png    |gamma| distribution of the prunable BNs per epoch (a legend names the
                    epochs drawn), with a line where a cut at --prune-ratio would fall
  gamma_stats.json  the same numbers, with the fraction of |gamma| below --gamma-threshold
                    and that cut's |gamma|

Choosing s: watch gamma_hist.png and the gamma_below column of results.csv. The model is
ready to prune at ratio r when about a fraction r of the gammas has collapsed towards zero
(a second peak left of the --prune-ratio line) while mAP is still close to the dense model's. Too
little sparsity: raise --s or train longer; mAP falling away: lower --s or use
--s-schedule decay so the last epochs recover.

examples:
  python main.py sparse --weights runs/train/best.weights --s 0.01 --epochs 10
  python main.py sparse --cfg cfgs/res2net-yolov3.cfg --data coco.yaml \\
      --weights dense.weights --s 0.001 --s-schedule decay --epochs 100 --device cuda"""

DEFAULT_OUT = "runs/sparse"
# SGD: the L1 subgradient is network slimming's; Adam would rescale it per gamma.
DEFAULTS = dict(epochs=10, optimizer="sgd", lr=0.005)


def add_arguments(p) -> None:
    train_cmd.add_arguments(p, DEFAULTS, DEFAULT_OUT)
    g = p.add_argument_group("sparsity")
    g.add_argument("--s", type=float, default=0.01,
                   help="L1 rate on prunable gammas (default: 0.01, sized for the demo)")
    g.add_argument("--s-schedule", choices=("constant", "decay"), default="constant",
                   help="constant s, or decay to s * --s-final-frac from --s-decay-start "
                        "(a fraction of the epochs) on (default: constant)")
    g.add_argument("--s-decay-start", type=float, default=0.7,
                   help="fraction of the epochs after which s decays (default: 0.7)")
    g.add_argument("--s-final-frac", type=float, default=0.1,
                   help="s after the decay, as a fraction of --s (default: 0.1)")
    g.add_argument("--scope", choices=("inner", "all"), default="all",
                   help="which BNs are prunable: 'all' includes residual chains as coupled "
                        "groups, 'inner' leaves them alone (default: all)")
    g.add_argument("--gamma-threshold", type=float, default=0.01,
                   help="|gamma| below this counts as pruned-ready in the stats (default: 0.01)")
    g.add_argument("--prune-ratio", type=float, default=0.5, metavar="R",
                   help="only draws the line in gamma_hist.png: the |gamma| quantile at R, "
                        "about where `prune --ratio R` would cut (default: 0.5)")


def run(args) -> int:
    return train_cmd.train(args, sparsity_hooks, default_out=DEFAULT_OUT)


def sparsity_hooks(args) -> list:
    """The L1 penalty of ``args`` (the run's effective flags), checked."""
    from common.errors import UserError
    from sparsity.hook import SparsityHook
    from sparsity.penalty import SparsitySchedule

    if args.s < 0:
        raise UserError(f"--s must be >= 0, got {args.s}")
    if not 0 <= args.prune_ratio < 1:
        raise UserError(f"--prune-ratio must be in [0, 1), got {args.prune_ratio}")
    if args.optimizer != "sgd" and args.s > 0:
        raise UserError(f"--optimizer {args.optimizer} would rescale the L1 subgradient per "
                        "gamma (every gamma would shrink at the learning rate); sparse "
                        "training needs --optimizer sgd")
    try:
        schedule = SparsitySchedule(args.s, args.s_schedule, args.s_decay_start,
                                    args.s_final_frac)
    except ValueError as e:
        raise UserError(str(e)) from None
    return [SparsityHook(schedule, args.scope, args.gamma_threshold, args.prune_ratio)]
