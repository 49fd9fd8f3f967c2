"""`PaBTPruningCallback`: prune binary convolutions during `fit`, down to a BNN.

The callback owns the pruning step (like tfmot's `UpdatePruningStep`) and logs the
network's bit-width (like tfmot's `PruningSummaries`). All of its state lives in the PaBT
layers' weights — `pruning_step`, `mask`, `importance`, `gate_decay` — so `model.save`,
checkpoints and `BackupAndRestore` carry it, and a resumed run continues the same
schedule. The Python side only mirrors those weights.

Step semantics: the step is the number of training batches done. A pruning event at step
`s` (the schedule's `should_prune(s)`) runs at the beginning of batch `s`, before it
trains, with the importances accumulated so far.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np
import tensorflow as tf

from pabt_tf.layers import PaBTLayer, pabt_layers
from pabt_tf.schedules import PruningSchedule, deserialize as _deserialize_schedule

__all__ = ["PaBTPruningCallback", "RANKINGS", "NORMALIZATIONS"]

RANKINGS = ("global", "layerwise")
NORMALIZATIONS = ("sum", "max", "none")
_EPS = 1e-9


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


class PaBTPruningCallback(tf.keras.callbacks.Callback):
    """Deactivate the least important binary convolutions following a schedule.

    At each pruning event of `schedule` the callback deactivates the lowest-ranked
    active binary convolutions so that the network's number of active binary
    convolutions is

        ceil(target + remaining_fraction · (total − target))

    with `total = Σ M·N` and `target = Σ target_per_layer` over the PaBT layers. At the
    schedule's `end_step` every layer has exactly `target_per_layer` active binary
    convolutions (with 1, the network is a BNN and trains on as one). A layer never drops
    below `target_per_layer`.

    The importances are those `PaBTModel.train_step` accumulates (DESIGN.md §1.2). The
    callback works with any `tf.keras.Model` containing PaBT layers; with a model that
    is not a `PaBTModel` it warns at `on_train_begin`, because nothing updates the
    importances unless a custom `train_step` calls `pabt_tf.training.update_importance`.

    At the end of every epoch it adds `mean_binary_convs` (the MAC-weighted mean number
    of active binary convolutions per layer, `pabt_tf.mean_binary_convs`) to the logs,
    so the progress bar and `History` show it: Keras appends its `ProgbarLogger` and
    `History` after the user's callbacks; a callback listed *before* this one does not
    see the key.

    ```python
    model.fit(x, y, epochs=10, callbacks=[
        pabt.PaBTPruningCallback(pabt.schedules.PolynomialDecay(0, 2000, frequency=100),
                                 target_per_layer=1, log_dir="logs")])
    ```

    # Arguments
        schedule: a `pabt_tf.schedules.PruningSchedule` (or its Keras serialization).
        target_per_layer: active binary convolutions each layer ends with (integer >= 1,
            at most every layer's `M·N`).
        ranking: `"global"`: importances are normalised within each layer (see
            `normalization`), optionally divided by the layer's relative cost
            (`mac_weighted`), then compared across layers; `"layerwise"`: every layer
            follows the schedule on its own (loses binary convolutions at the same rate)
            and drops its least important ones.
        log_dir: if given, TensorBoard summaries go to `log_dir/pabt`: scalars
            `mean_binary_convs`, `remaining_fraction`, `active_binary_convs/<layer>`
            and histograms `importance/<layer>`, at every pruning event and epoch end.
        normalization: for `"global"` ranking, how importances are made comparable
            across layers: `"sum"` (divided by the layer's total over its active binary
            convolutions, default), `"max"` (by the layer's largest) or `"none"`.
        mac_weighted: for `"global"` ranking, divide each score by the layer's MACs per
            binary convolution relative to the mean over layers, so that expensive
            layers lose binary convolutions first.
        decay_steps: soft pruning. `0` (default) or `1`: a chosen binary convolution's
            mask clears at once. `d > 1`: its `gate_decay` steps from `(d−1)/d` down to
            0 over the next `d − 1` steps before the mask clears; it counts as pruned
            for the schedule from the moment it is chosen. The last ones clear at
            `end_step + d − 1`.
        budget: stop at a MAC-weighted mean of `budget` active binary convolutions per
            layer instead of at `target_per_layer` (a mixed-precision network). With
            `"global"` ranking the MAC-weighted mean follows the schedule from its full
            value to `budget` (pruning the lowest-ranked until it is at or below the
            scheduled value); with `"layerwise"` every layer ends at
            `ceil(budget)` (clipped to its `M·N`). `target_per_layer` stays the floor.
        verbose: 1 prints one line per pruning event.

    # Raises
        ValueError: on invalid arguments (at construction), and at `on_train_begin`
            if the model has no (built) PaBT layers, or the target or budget cannot be
            met (`target_per_layer` larger than a layer's `M·N`, budget out of range).
    """

    def __init__(
        self,
        schedule: PruningSchedule | dict,
        target_per_layer: int = 1,
        ranking: str = "global",
        log_dir: str | None = None,
        normalization: str = "sum",
        mac_weighted: bool = False,
        decay_steps: int = 0,
        budget: float | None = None,
        verbose: int = 0,
    ):
        super().__init__()
        try:
            schedule = _deserialize_schedule(schedule)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"`schedule` must be a pabt_tf.schedules.PruningSchedule, got {schedule!r}."
            ) from err
        self.schedule = schedule
        self.target_per_layer = _check_int("target_per_layer", target_per_layer, 1)
        if ranking not in RANKINGS:
            raise ValueError(f"`ranking` must be one of {RANKINGS}, got {ranking!r}.")
        self.ranking = ranking
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}."
            )
        self.normalization = normalization
        if not isinstance(mac_weighted, bool):
            raise ValueError(f"`mac_weighted` must be a bool, got {mac_weighted!r}.")
        self.mac_weighted = mac_weighted
        self.decay_steps = _check_int("decay_steps", decay_steps, 0)
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float, np.number)):
                raise ValueError(f"`budget` must be a number >= 1 or None, got {budget!r}.")
            if not math.isfinite(budget) or budget < self.target_per_layer:
                raise ValueError(
                    f"`budget` must be a finite number >= target_per_layer "
                    f"({self.target_per_layer}), got {budget!r}."
                )
            budget = float(budget)
        self.budget = budget
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(f"`log_dir` must be a path or None, got {log_dir!r}.")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.verbose = _check_int("verbose", verbose, 0)
        self.events: list[dict] = []  # one record per pruning event of this process
        self._layers: list[PaBTLayer] = []
        self._loaded = False
        self._writer = None

    # -- setup ------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            "schedule": tf.keras.utils.serialize_keras_object(self.schedule),
            "target_per_layer": self.target_per_layer,
            "ranking": self.ranking,
            "log_dir": self.log_dir,
            "normalization": self.normalization,
            "mac_weighted": self.mac_weighted,
            "decay_steps": self.decay_steps,
            "budget": self.budget,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config: dict) -> "PaBTPruningCallback":
        return cls(**config)

    def on_train_begin(self, logs=None):
        layers = pabt_layers(self.model)
        if not layers:
            raise ValueError(
                f"PaBTPruningCallback: model {self.model.name!r} has no PaBT layers "
                "(pabt_tf.layers.PaBTConv2D / PaBTDense) to prune."
            )
        unbuilt = [layer.name for layer in layers if not layer.built]
        if unbuilt:
            raise ValueError(
                f"PaBTPruningCallback: PaBT layers {unbuilt} are not built; build the "
                "model (call it on a batch) before `fit`."
            )
        too_small = [
            f"{layer.name} (M·N = {layer.num_binary_convs})"
            for layer in layers
            if layer.num_binary_convs < self.target_per_layer
        ]
        if too_small:
            raise ValueError(
                f"PaBTPruningCallback: `target_per_layer`={self.target_per_layer} is larger "
                f"than the number of binary convolutions of {', '.join(too_small)}; the "
                "schedule cannot be met."
            )
        macs = np.array([layer.binary_conv_macs() for layer in layers], dtype=np.float64)
        if self.budget is not None:
            full = float((macs * [layer.num_binary_convs for layer in layers]).sum() / macs.sum())
            if self.budget > full:
                raise ValueError(
                    f"PaBTPruningCallback: `budget`={self.budget} is above the network's "
                    f"unpruned mean of {full:.3f} binary convolutions per layer: nothing "
                    "to prune."
                )
        from pabt_tf.training import PaBTModel  # late: training imports layers only

        if not isinstance(self.model, PaBTModel):
            warnings.warn(
                f"PaBTPruningCallback: model {self.model.name!r} is a "
                f"{type(self.model).__name__}, not a pabt_tf.PaBTModel: nothing accumulates "
                "the binary convolutions' importances unless its train_step calls "
                "pabt_tf.training.update_importance, and pruning then ranks by the "
                "importances already stored (ties broken by index). Use "
                "pabt_tf.PaBTModel.from_functional(model).",
                UserWarning,
                stacklevel=2,
            )
        self._layers = layers
        self._macs = macs
        self._loaded = False  # weights are read at the first epoch: BackupAndRestore
        # (possibly listed after this callback) restores them in its on_train_begin.
        if self.log_dir is not None and self._should_write():
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "pabt"))

    def _should_write(self) -> bool:
        strategy = self.model.distribute_strategy
        return bool(getattr(strategy.extended, "should_checkpoint", True))

    def _load_state(self):
        layers = self._layers
        self._step = max(int(tf.keras.backend.get_value(layer.pruning_step)) for layer in layers)
        d = self.decay_steps
        self._masks, self._remaining = [], []
        for layer in layers:
            mask = layer.binary_conv_mask.copy()
            decay = np.asarray(tf.keras.backend.get_value(layer.gate_decay), np.float64)
            decaying = mask & (decay < 1.0)
            remaining = np.zeros(mask.shape, np.int64)
            if d > 1:
                remaining[decaying] = np.rint(decay[decaying] * d).astype(np.int64)
            # Decaying with no step left (e.g. saved by a run with soft pruning and
            # resumed without it): pruned now.
            mask[decaying & (remaining <= 0)] = False
            self._masks.append(mask)
            self._remaining.append(remaining)
        updates = [(layer.pruning_step, self._step) for layer in layers]
        tf.keras.backend.batch_set_value(updates + self._state_updates(range(len(layers))))
        self._checked = self._step - 1  # events before this step ran before the save
        self._loaded = True

    def _state_updates(self, indices) -> list:
        d = max(self.decay_steps, 1)
        updates = []
        for i in indices:
            layer = self._layers[i]
            decay = np.where(self._remaining[i] > 0, self._remaining[i] / d, 1.0)
            updates.append((layer.mask, self._masks[i].astype(np.float32)))
            updates.append((layer.gate_decay, decay.astype(np.float32)))
        return updates

    # -- per batch --------------------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        if not self._loaded:
            self._load_state()

    def on_train_batch_begin(self, batch, logs=None):
        if not self._loaded:
            self._load_state()
        self._batch_begin = batch
        # With steps_per_execution > 1 several steps pass between calls: run the last
        # event among them.
        event = None
        for step in range(self._checked + 1, self._step + 1):
            if self.schedule.should_prune(step):
                event = step
        self._checked = self._step
        if event is not None:
            self._prune(event, self.schedule.remaining_fraction(event))

    def on_train_batch_end(self, batch, logs=None):
        n = batch - self._batch_begin + 1
        self._step += n
        changed = []
        for i, remaining in enumerate(self._remaining):
            decaying = remaining > 0
            if decaying.any():
                remaining[decaying] = np.maximum(remaining[decaying] - n, 0)
                self._masks[i][decaying & (remaining == 0)] = False
                changed.append(i)
        updates = [(layer.pruning_step, self._step) for layer in self._layers]
        tf.keras.backend.batch_set_value(updates + self._state_updates(changed))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._layers:
            logs["mean_binary_convs"] = self.mean_binary_convs
        if self._loaded:
            self._write_summaries({})

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # -- pruning ----------------------------------------------------------------------

    @property
    def step(self) -> int:
        """The pruning step (training batches done), as stored in the layers."""
        if self._loaded:
            return self._step
        return max(int(tf.keras.backend.get_value(l.pruning_step)) for l in pabt_layers(self.model))

    @property
    def mean_binary_convs(self) -> float:
        """MAC-weighted mean number of active binary convolutions per layer (masks)."""
        counts = np.array([m.sum() for m in self._masks] if self._loaded else
                          [l.active_binary_convs for l in self._layers], dtype=np.float64)
        return float((self._macs * counts).sum() / self._macs.sum())

    def _effective(self) -> list[np.ndarray]:
        """Active and not decaying: what the schedule counts."""
        return [m & (r <= 0) for m, r in zip(self._masks, self._remaining)]

    def _targets(self) -> np.ndarray:
        return np.array([self.target_per_layer] * len(self._layers), dtype=np.int64)

    def scheduled_count(self, remaining_fraction: float) -> int:
        """Active binary convolutions the network should have at `remaining_fraction`
        (without budget)."""
        total = sum(layer.num_binary_convs for layer in self._layers)
        target = int(self._targets().sum())
        return int(math.ceil(target + remaining_fraction * (total - target) - _EPS))

    def ranking_scores(self) -> list[np.ndarray]:
        """Per layer `(M, N)` scores the `"global"` ranking compares (lower is pruned
        first); inactive and decaying binary convolutions get `inf`."""
        scores = []
        mean_macs = self._macs.mean()
        for i, (layer, active) in enumerate(zip(self._layers, self._effective())):
            imp = layer.importance.astype(np.float64)
            if self.normalization == "sum":
                denom = imp[active].sum() if active.any() else 0.0
            elif self.normalization == "max":
                denom = imp[active].max() if active.any() else 0.0
            else:
                denom = 1.0
            score = imp / denom if denom > 0 else np.zeros_like(imp)
            if self.mac_weighted:
                score = score / (self._macs[i] / mean_macs)
            scores.append(np.where(active, score, np.inf))
        return scores

    def _prune(self, step: int, fraction: float):
        effective = self._effective()
        counts = np.array([e.sum() for e in effective], dtype=np.int64)
        floors = self._targets()
        before = counts.copy()
        chosen: list[tuple[int, int, int]] = []
        if self.ranking == "global":
            scores = self.ranking_scores()
            candidates = sorted(
                (float(s[m, n]), i, int(m), int(n))
                for i, s in enumerate(scores)
                for m, n in zip(*np.nonzero(effective[i]))
            )
            if self.budget is None:
                goal = self.scheduled_count(fraction)
                done = lambda: counts.sum() <= goal  # noqa: E731
            else:
                full = float((self._macs * [l.num_binary_convs for l in self._layers]).sum()
                             / self._macs.sum())
                goal = self.budget + fraction * (full - self.budget)
                done = lambda: (self._macs * counts).sum() / self._macs.sum() <= goal + _EPS  # noqa: E731
            for _, i, m, n in candidates:
                if done():
                    break
                if counts[i] <= floors[i]:
                    continue
                counts[i] -= 1
                chosen.append((i, m, n))
        else:
            goal = 0
            for i, layer in enumerate(self._layers):
                end = floors[i]
                if self.budget is not None:
                    end = max(end, min(layer.num_binary_convs, math.ceil(self.budget - _EPS)))
                goal_i = int(math.ceil(end + fraction * (layer.num_binary_convs - end) - _EPS))
                goal += goal_i
                imp = layer.importance
                order = sorted(
                    (float(imp[m, n]), int(m), int(n)) for m, n in zip(*np.nonzero(effective[i]))
                )
                for _, m, n in order[: max(counts[i] - goal_i, 0)]:
                    counts[i] -= 1
                    chosen.append((i, m, n))
        d = self.decay_steps
        touched = sorted({i for i, _, _ in chosen})
        for i, m, n in chosen:
            if d > 1:
                self._remaining[i][m, n] = d - 1
            else:
                self._masks[i][m, n] = False
        if touched:
            tf.keras.backend.batch_set_value(self._state_updates(touched))
        event = {
            "step": step,
            "remaining_fraction": fraction,
            "goal": goal,
            "active_before": before.tolist(),
            "active_after": counts.tolist(),
            "pruned": [(self._layers[i].name, m, n) for i, m, n in chosen],
        }
        self.events.append(event)
        if self.verbose:
            print(
                f"PaBT pruning step {step}: remaining fraction {fraction:.3f}, active "
                f"{int(before.sum())} -> {int(counts.sum())}, pruned {event['pruned']}"
            )
        self._write_summaries({"remaining_fraction": fraction}, step=step)

    # -- TensorBoard ------------------------------------------------------------------

    def _write_summaries(self, scalars: dict, step: int | None = None):
        if self._writer is None:
            return
        step = self._step if step is None else step
        with self._writer.as_default(step=step):
            tf.summary.scalar("mean_binary_convs", self.mean_binary_convs)
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            for layer, mask in zip(self._layers, self._masks):
                tf.summary.scalar(f"active_binary_convs/{layer.name}", int(mask.sum()))
                tf.summary.histogram(f"importance/{layer.name}", layer.importance)
        self._writer.flush()
