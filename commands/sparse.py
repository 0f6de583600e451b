"""`main.py sparse`: sparse training that prepares the cut (target-aware, or network slimming's
L1 on every prunable BN gamma)."""

from __future__ import annotations

from commands import train as train_cmd
from prune.settings import add_arguments as add_prune_settings

HELP = "sparse training: empty what `main.py prune` will remove, so the cut costs no mAP"
DESCRIPTION = """Prepare a dense model for `main.py prune`. Give it the prune flags you will prune
with (--ratio, --layers, --ranking, --target-params, ...): it asks the pruner which coupled
channels and blocks those flags remove (the plan), and fades exactly those out of the model
while the rest trains on (--penalty target, the default: growing regularization, Wang et al.
2021). Each step multiplies the planned BN gammas and betas by 1 - eta, eta growing over the
first --ramp of the epochs; after the ramp they are held at zero, so the cut is lossless. The
plan is chosen again after each epoch of the ramp, from the weights prune will read.

--penalty l1 is network slimming (Liu et al., 2017): s * sign(gamma) added to the gradient of
every BatchNorm weight the analyzer marks prunable for --scope; prune then cuts where the
gammas happen to be lowest, which may be past what sparsity emptied.

Everything else is `main.py train`: same engine, same flags, same files in --out, plus:
  gamma_hist.png    |gamma| distribution of the prunable BNs per epoch, with the planned cut
                    (target) or the |gamma| quantile at --prune-ratio (l1) marked
  gamma_stats.json  the same numbers (and, target, the plan: channels and blocks)
results.csv gains, with --penalty target, per epoch: cut_left (the planned |gamma| still in the
model, as a share of the start), map50_masked and map_masked (the mAP of the model with the
plan masked: the pruned model's mAP, without cutting) and plan_changed; a readiness line is
printed. --ready-tol T ends the run once the masked mAP is within T of the unmasked one.

examples:
  python main.py sparse --weights runs/train/best.weights --layers 2 --target-params 0.14x
  python main.py prune --weights runs/sparse/last.weights --layers 2 --target-params 0.14x
  python main.py sparse --weights runs/train/best.weights --penalty l1 --s 0.01 --epochs 10
  python main.py sparse --cfg cfgs/res2net-yolov3.cfg --data coco.yaml \\
      --weights dense.weights --ratio 0.5 --epochs 30 --device cuda"""

# The prune flags that choose the plan (--scope is sparse's own, shared with prune).
PLAN_SETTINGS = ("ratio", "layers", "flops_exponent", "ranking", "latency_exponent",
                 "target_gflops", "target_params", "target_latency", "min_keep", "round_to")

DEFAULT_OUT = "runs/sparse"
# SGD: the L1 subgradient is network slimming's; Adam would rescale it per gamma.
DEFAULTS = dict(epochs=10, optimizer="sgd", lr=0.005)


def add_arguments(p) -> None:
    train_cmd.add_arguments(p, DEFAULTS, DEFAULT_OUT)
    g = p.add_argument_group("sparsity")
    g.add_argument("--penalty", choices=("target", "l1"), default="target",
                   help="target: fade out what the prune flags below remove; l1: network "
                        "slimming's L1 on every prunable gamma (default: target)")
    g.add_argument("--ramp", type=float, default=0.7, metavar="F",
                   help="target: fraction of the epochs over which the plan fades out; the "
                        "rest train with it held at zero (default: 0.7)")
    g.add_argument("--ready-tol", type=float, default=None, metavar="T",
                   help="target: stop once the masked mAP@.5 and mAP@.5:.95 are within T of "
                        "the unmasked ones (default: train every epoch)")
    g.add_argument("--s", type=float, default=0.01,
                   help="l1: rate on prunable gammas (default: 0.01, sized for the demo)")
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
                   help="l1: only draws the line in gamma_hist.png: the |gamma| quantile at R, "
                        "about where `prune --ratio R` would cut (default: 0.5)")
    add_prune_settings(p.add_argument_group("the planned cut (--penalty target): the flags "
                                            "`main.py prune` will be given"), PLAN_SETTINGS,
                       unset={"ratio": "0 with --layers; searched with a --target-*; one of "
                                       "them is needed with --penalty target"})


def run(args) -> int:
    return train_cmd.train(args, sparsity_hooks, default_out=DEFAULT_OUT)


def sparsity_hooks(args) -> list:
    """The penalty of ``args`` (the run's effective flags), checked."""
    if getattr(args, "penalty", "l1") == "target":
        return [target_hook(args)]
    return [l1_hook(args)]


def target_hook(args):
    from commands.prune import settings_of
    from common.errors import UserError
    from sparsity.target import TargetSparsityHook

    settings = settings_of(args)  # exactly as `main.py prune` reads the same flags
    if args.ready_tol is not None and args.ready_tol < 0:
        raise UserError(f"--ready-tol must be >= 0, got {args.ready_tol}")
    if not 0 < args.ramp <= 1:
        raise UserError(f"--ramp must be in (0, 1], got {args.ramp}")
    return TargetSparsityHook(settings, args.img_size, args.ramp, args.ready_tol,
                              args.gamma_threshold)


def l1_hook(args):
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
    return SparsityHook(schedule, args.scope, args.gamma_threshold, args.prune_ratio)
