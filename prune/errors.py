"""Typed errors of the pruner."""

from common.errors import UserError


class PruneError(UserError):
    """A pruning request that cannot be carried out (bad ratio, nothing prunable, bad plan)."""
