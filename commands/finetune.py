"""`main.py finetune`: recover accuracy of a pruned model, optionally distilling the dense one."""

from __future__ import annotations

from commands import train as train_cmd

HELP = "fine-tune a pruned model (optionally with knowledge distillation from the dense one)"
DESCRIPTION = """Fine-tune the slim model written by `main.py prune` (DIR/pruned.cfg and
DIR/pruned.weights) with the same engine and files as `main.py train`. With --teacher-cfg and
--teacher-weights, the dense model is a frozen teacher: an objectness-scaled output
distillation loss (student matches the teacher's objectness everywhere, its boxes and classes
where the teacher sees objects), weighted by --distill-weight, joins the detection loss.

examples:
  python main.py finetune --cfg runs/prune/pruned.cfg --weights runs/prune/pruned.weights
  python main.py finetune --cfg runs/prune/pruned.cfg --weights runs/prune/pruned.weights \\
      --teacher-cfg cfgs/demo.cfg --teacher-weights runs/train/best.weights"""

DEFAULT_OUT = "runs/finetune"
DEFAULTS = dict(epochs=10, optimizer="adamw", lr=0.003)


def add_arguments(p) -> None:
    train_cmd.add_arguments(p, DEFAULTS, DEFAULT_OUT)
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher-cfg", default=None, help="dense model's .cfg")
    g.add_argument("--teacher-weights", default=None, help="dense model's .weights")
    g.add_argument("--distill-weight", type=float, default=1.0,
                   help="weight of the distillation loss against the detection loss "
                        "(default: 1.0)")


def run(args) -> int:
    return train_cmd.train(args, distillation_hooks, default_out=DEFAULT_OUT)


def distillation_hooks(args) -> list:
    """The teacher of ``args`` (the run's effective flags), if any, loaded and checked."""
    from common.errors import UserError
    from darknet import Darknet
    from finetune.hook import DistillationHook

    if not args.weights:
        raise UserError("finetune needs --weights (the pruned model's .weights); use "
                        "`main.py train` to train from scratch")
    if bool(args.teacher_cfg) != bool(args.teacher_weights):
        raise UserError("give both --teacher-cfg and --teacher-weights, or neither")
    if not args.teacher_cfg:
        return []
    teacher = Darknet(args.teacher_cfg)
    teacher.load_weights(args.teacher_weights)
    return [DistillationHook(teacher, args.distill_weight)]
