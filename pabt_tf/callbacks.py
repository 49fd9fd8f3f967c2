"""`PaBTPruningCallback`: prune binary convolutions during `fit`, down to a BNN.

The callback owns the pruning step (like tfmot's `UpdatePruningStep`) and logs the
network's bit-width (like tfmot's `PruningSummaries`). It is thin: the state lives in the
PaBT layers' weights and changes only through the layers' operations
(`pabt_tf.layers.state`), and what to prune is decided by the pure functions of
`pabt_tf.pruning`. So `model.save`, checkpoints and `BackupAndRestore` carry everything,
and a resumed run continues the same schedule.

Step semantics: the step is the number of training batches done. A pruning event at step
`s` (the schedule's `should_prune(s)`) runs at the beginning of batch `s`, before it
trains, with the importances accumulated so far.
"""

from __future__ import annotations

import math
import os
import warnings
import weakref
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from pabt_tf import _callback_checks as checks
from pabt_tf import pruning
from pabt_tf._validation import check_int
from pabt_tf.costs import set_reference_input_shape
from pabt_tf.layers import PaBTLayer, pabt_layers
from pabt_tf.pruning import NORMALIZATIONS, ORDERS, RANKINGS
from pabt_tf.schedules import PruningSchedule
from pabt_tf.schedules import deserialize as _deserialize_schedule
from pabt_tf.training import PaBTModel

__all__ = ["PaBTPruningCallback", "RANKINGS", "NORMALIZATIONS", "ORDERS", "MISSING_IMPORTANCE"]

MISSING_IMPORTANCE = ("error", "skip")
# Every callback whose training began: two driving one model in one `fit` are refused.
_STARTED: "weakref.WeakSet[PaBTPruningCallback]" = weakref.WeakSet()


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
    It never ranks a layer whose importances were not measured (all zero, or not
    finite): see `on_missing_importance`.

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
            `end_step + d − 1`. (`PaBTLayer.prune` and `advance_soft_pruning`.)
        budget: stop at a MAC-weighted mean of `budget` active binary convolutions per
            layer instead of at `target_per_layer` (a mixed-precision network). With
            `"global"` ranking the MAC-weighted mean follows the schedule from its full
            value to `budget` (pruning the lowest-ranked until it is at or below the
            scheduled value); with `"layerwise"` every layer ends at
            `ceil(budget)` (clipped to its `M·N`). `target_per_layer` stays the floor.
        on_missing_importance: what a pruning event does when a layer it would rank
            has no importance measured (every training step so far was skipped for
            non-finite gradients, or nothing updates the importances): `"error"`
            (default) raises `ValueError`; `"skip"` warns and prunes nothing at this
            event (the next event catches up with the schedule).
        verbose: 1 prints one line per pruning event.
        order: which binary convolutions of a layer may go next: `"convolution"`
            (default: any, by rank) or `"activation_bases"` (those of one activation
            base until it is empty — the partly emptied base first, else the one of
            lowest total score — so a layer stops computing that base's convolution at
            once and multi-base training gets cheaper early).
        latency_budget_ms: prune to a latency target instead: stop when the latency
            `latency_table` predicts for the masks is at or below it. The schedule moves
            the predicted latency from the unpruned network's to the target (pruning
            the lowest-ranked until it is at or below the scheduled value), and the
            `"global"` ranking divides each importance by its layer's cost per binary
            convolution (`per_conv_ms`, relative to the mean), so expensive
            convolutions go first. It must lie in the range the table predicts, from
            every layer at `target_per_layer` to every binary convolution active.
            Needs `latency_table`; not with `budget`, `mac_weighted` or `"layerwise"`.
        latency_table: a `pabt_tf.LatencyTable` (or its dict, or a path to its JSON)
            describing this model's PaBT layers (`pabt_tf.latency_table(model)` on
            this host, `LatencyTable.from_profile` from a board).
        reference_input_shape: for a model built on `Input((None, None, C))`: the
            model input shape its costs are counted at (`(1, 360, 480, 3)`, see
            `pabt_tf.set_reference_input_shape`). Default: the shape of the first
            training batch (known after the first step; a pruning event at step 0 then
            needs it given).

    # Raises
        ValueError: on invalid arguments (at construction); at `on_train_begin` if the
            model has no (built) PaBT layers, is already driven by another
            `PaBTPruningCallback` in the same `fit`, or the target or budget cannot be met
            (`target_per_layer` larger than a layer's `M·N`, budget out of range), or
            the latency table does not match the model (naming the layer); at a
            pruning event with `on_missing_importance="error"`, if a layer to rank has
            no importance measured, or if the model's input size is still unknown.

    # Warns
        UserWarning: at `on_train_begin`, when the schedule's last pruning event falls
            after the last step of the `fit` (`params["epochs"] · params["steps"]`):
            the target would not be reached.
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
        on_missing_importance: str = "error",
        order: str = "convolution",
        latency_budget_ms: float | None = None,
        latency_table: Any = None,
        reference_input_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        try:
            schedule = _deserialize_schedule(schedule)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"`schedule` must be a pabt_tf.schedules.PruningSchedule, got {schedule!r}."
            ) from err
        self.schedule = schedule
        self.target_per_layer = check_int("target_per_layer", target_per_layer, 1)
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
        self.decay_steps = check_int("decay_steps", decay_steps, 0)
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
        self.verbose = check_int("verbose", verbose, 0)
        if on_missing_importance not in MISSING_IMPORTANCE:
            raise ValueError(
                f"`on_missing_importance` must be one of {MISSING_IMPORTANCE}, got "
                f"{on_missing_importance!r}."
            )
        self.on_missing_importance = on_missing_importance
        if order not in ORDERS:
            raise ValueError(f"`order` must be one of {ORDERS}, got {order!r}.")
        self.order = order
        self.latency_budget_ms, self.latency_table = checks.latency_arguments(
            latency_budget_ms, latency_table, self.budget, self.mac_weighted, self.ranking,
            self.target_per_layer,
        )  # fmt: skip
        self.reference_input_shape = checks.reference_shape_argument(reference_input_shape)
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
            "on_missing_importance": self.on_missing_importance,
            "order": self.order,
            "latency_budget_ms": self.latency_budget_ms,
            "latency_table": None if self.latency_table is None else self.latency_table.to_dict(),
            "reference_input_shape": self.reference_input_shape,
        }

    @classmethod
    def from_config(cls, config: dict) -> "PaBTPruningCallback":
        return cls(**config)

    def on_train_begin(self, logs=None):
        self._refuse_a_second_callback()
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
        if self.reference_input_shape is not None:
            set_reference_input_shape(self.model, self.reference_input_shape)
        self._layers = layers
        self._macs = None
        if all(layer.reference_input_shape is not None for layer in layers):
            self._setup_costs()  # else after the first step, at the first batch's size
        start = max(layer.get_pruning_step() for layer in layers)  # a continued fit
        checks.warn_late_schedule(self.schedule, self.decay_steps, getattr(self, "params", None), start)
        if not isinstance(self.model, PaBTModel):
            warnings.warn(
                f"PaBTPruningCallback: model {self.model.name!r} is a "
                f"{type(self.model).__name__}, not a pabt_tf.PaBTModel: nothing accumulates "
                "the binary convolutions' importances unless its train_step calls "
                "pabt_tf.training.update_importance; pruning ranks the importances already "
                "stored and refuses layers without any (`on_missing_importance`). Use "
                "pabt_tf.PaBTModel.from_functional(model).",
                UserWarning,
                stacklevel=2,
            )
        self._loaded = False  # weights are read at the first epoch: BackupAndRestore
        # (possibly listed after this callback) restores them in its on_train_begin.
        if self.log_dir is not None and self._should_write():
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "pabt"))

    def _setup_costs(self) -> None:
        """Per-layer costs at the layers' reference input shapes, and the checks that
        need them (budget range, the latency table matching the model)."""
        layers = self._layers
        macs = np.array([layer.binary_conv_macs() for layer in layers], dtype=np.float64)
        if self.budget is not None:
            full = pruning.mac_weighted_mean(macs, [layer.num_binary_convs for layer in layers])
            if self.budget > full:
                raise ValueError(
                    f"PaBTPruningCallback: `budget`={self.budget} is above the network's "
                    f"unpruned mean of {full:.3f} binary convolutions per layer: nothing "
                    "to prune."
                )
        self._costs = macs
        if self.latency_table is not None:
            self.latency_table.check_model(self.model)
            per_conv = np.array([row.per_conv_ms for row in self.latency_table.layers], np.float64)
            # A free binary convolution (per_conv 0) must still rank: tiny, not zero.
            self._costs = np.maximum(per_conv, 1e-6 * max(float(per_conv.max()), 1e-9))
        self._macs = macs

    def _require_costs(self, step: int) -> None:
        if self._macs is not None:
            return
        if all(layer.reference_input_shape is not None for layer in self._layers):
            self._setup_costs()
            return
        raise ValueError(
            f"PaBTPruningCallback: pruning event at step {step}, but the model's PaBT layers "
            "take inputs of unknown size and none is known yet: pass "
            "`reference_input_shape=(1, H, W, C)` (or call "
            "pabt_tf.set_reference_input_shape(model, ...)) before fit."
        )

    def _refuse_a_second_callback(self) -> None:
        checks.refuse_a_second_callback(self, _STARTED)

    def _should_write(self) -> bool:
        # Only the chief writes summaries (MultiWorkerMirroredStrategy).
        return bool(self.model.distribute_strategy.extended.should_checkpoint)

    def _load_state(self):
        """Continue from the state in the layers (a restart, or a restore): one step for
        all layers, and soft pruning normalised to this callback's `decay_steps`."""
        self._step = max(layer.get_pruning_step() for layer in self._layers)
        self._in_progress = set()
        for i, layer in enumerate(self._layers):
            layer.set_pruning_step(self._step)
            if layer.advance_soft_pruning(0, self.decay_steps):
                self._in_progress.add(i)
        self._checked = self._step - 1  # events before this step ran before the save
        self._loaded = True

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
            self._require_costs(event)
            self._prune(event, self.schedule.remaining_fraction(event))

    def on_train_batch_end(self, batch, logs=None):
        if self._macs is None:  # the first step ran: its batch's size is known now
            self._require_costs(self._step)
        n = batch - self._batch_begin + 1
        self._step += n
        for layer in self._layers:
            layer.set_pruning_step(self._step)
        for i in sorted(self._in_progress):
            if not self._layers[i].advance_soft_pruning(n, self.decay_steps):
                self._in_progress.discard(i)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._layers and self._macs is not None:
            logs["mean_binary_convs"] = self.mean_binary_convs
            if self.latency_table is not None:
                logs["predicted_latency_ms"] = self.predicted_latency_ms
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
        return max(layer.get_pruning_step() for layer in pabt_layers(self.model))

    @property
    def predicted_latency_ms(self) -> float | None:
        """The latency `latency_table` predicts for the current masks (None without one)."""
        if self.latency_table is None:
            return None
        return self.latency_table.predict_masks([layer.binary_conv_mask for layer in self._layers])

    @property
    def mean_binary_convs(self) -> float:
        """MAC-weighted mean number of active binary convolutions per layer (masks)."""
        return pruning.mac_weighted_mean(
            self._macs, [layer.active_binary_convs for layer in self._layers]
        )

    def _prune(self, step: int, fraction: float):
        kept = [layer.kept_binary_conv_mask for layer in self._layers]
        importances = [layer.importance for layer in self._layers]
        latency = None
        if self.latency_table is not None:
            table = self.latency_table
            latency = pruning.LatencyGoal(table.predict_masks, table.range_ms()[1], self.latency_budget_ms)
        plan = pruning.plan_pruning(
            importances, kept, self._costs, [self.target_per_layer] * len(self._layers),
            fraction, self.ranking, self.normalization, self.mac_weighted or latency is not None,
            self.budget, self.order, latency=latency,
        )  # fmt: skip
        missing = pruning.unmeasured_layers(importances, kept, plan.ranked)
        if missing:
            self._refuse_unmeasured(step, missing)  # raises, or warns
            return
        for i, m, n in plan.chosen:
            self._layers[i].prune(m, n, decay_steps=self.decay_steps)
            if self.decay_steps > 1:
                self._in_progress.add(i)
        event = {
            "step": step,
            "remaining_fraction": fraction,
            "goal": plan.goal,
            "active_before": plan.counts_before,
            "active_after": plan.counts_after,
            "pruned": [(self._layers[i].name, m, n) for i, m, n in plan.chosen],
        }
        if self.latency_table is not None:
            event["predicted_latency_ms"] = self.latency_table.predict_masks(
                [layer.kept_binary_conv_mask for layer in self._layers])
        self.events.append(event)
        if self.verbose:
            print(
                f"PaBT pruning step {step}: remaining fraction {fraction:.3f}, active "
                f"{sum(plan.counts_before)} -> {sum(plan.counts_after)}, pruned "
                f"{event['pruned']}"
            )
        self._write_summaries({"remaining_fraction": fraction}, step=step)

    def _refuse_unmeasured(self, step: int, missing: list[int]) -> None:
        checks.refuse_unmeasured(step, [self._layers[i].name for i in missing],
                                 self.on_missing_importance)  # fmt: skip

    # -- TensorBoard ------------------------------------------------------------------

    def _write_summaries(self, scalars: dict, step: int | None = None):
        if self._writer is None:
            return
        step = self._step if step is None else step
        with self._writer.as_default(step=step):
            tf.summary.scalar("mean_binary_convs", self.mean_binary_convs)
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            for layer in self._layers:
                tf.summary.scalar(f"active_binary_convs/{layer.name}", layer.active_binary_convs)
                tf.summary.histogram(f"importance/{layer.name}", layer.importance)
        self._writer.flush()
