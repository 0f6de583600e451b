"""Dense against pruned in one table: ``compare({"dense": m1, "slim": m2}, data)``.

Imported eagerly: the function ``compare`` shares its name with the module that holds it,
and a lazy name would be shadowed by the module once anything imported
``comparison.compare``.
"""

from .compare import Comparison, ModelSpec, Row, Timing, compare

__all__ = ["Comparison", "ModelSpec", "Row", "Timing", "compare"]
