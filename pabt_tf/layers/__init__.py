"""Multi-base binary layers: `PaBTConv2D` and `PaBTDense` (DESIGN.md §1.1).

- `base`: `PaBTLayer`, the shared arguments, weights and forward pass (the fold of the
  weight bases and the sum over the active activation bases);
- `conv`, `dense`: the two layers, their binary op and geometry;
- `state`: the pruning state each layer owns and the operations on it.
"""

from __future__ import annotations

import tensorflow as tf

from pabt_tf.layers.base import PaBTLayer
from pabt_tf.layers.conv import PaBTConv2D
from pabt_tf.layers.dense import PaBTDense
from pabt_tf.layers.state import PruningState, is_active

__all__ = ["PaBTConv2D", "PaBTDense", "PaBTLayer", "PruningState", "is_active", "pabt_layers"]


def pabt_layers(model: tf.keras.Model) -> list[PaBTLayer]:
    """All PaBT layers of a model, nested models included, in topological order."""
    found: list[PaBTLayer] = []
    seen: set[int] = set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, PaBTLayer):
            found.append(layer)
        for sub in getattr(layer, "layers", []) or []:
            visit(sub)

    visit(model)
    return found
