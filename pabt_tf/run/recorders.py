"""What a training run records per epoch beside Keras' logs, each with `state()` /
`restore(state, epochs)` so a resumed run continues the records (`pabt_tf.run.state`)."""

from __future__ import annotations

import time
from typing import Any

import tensorflow as tf

import pabt_tf
from pabt_tf.layers import pabt_layers
from pabt_tf.run.evaluation import accuracy

__all__ = ["EpochRecorder", "EventLog", "EvaluateBeforePruning"]


class EpochRecorder(tf.keras.callbacks.Callback):
    """Records, per epoch, each PaBT layer's active binary convolutions and the lr.

    List it after the `PaBTPruningCallback`, so it sees the epoch's final masks."""

    def __init__(self):
        super().__init__()
        self.active: list[list[int]] = []
        self.learning_rates: list[float] = []
        self.epoch_seconds: list[float] = []

    def on_train_begin(self, logs=None):
        if hasattr(self, "initial"):  # restored from an earlier piece of this run
            return
        layers = pabt_layers(self.model)
        self.initial = [layer.active_binary_convs for layer in layers]
        self.initial_mean = pabt_tf.mean_binary_convs(self.model) if layers else None

    def state(self) -> dict[str, Any]:
        return {"active": self.active, "learning_rates": self.learning_rates,
                "epoch_seconds": self.epoch_seconds, "initial": self.initial,
                "initial_mean": self.initial_mean}

    def restore(self, state: dict[str, Any], epochs: int) -> None:
        for key in ("active", "learning_rates", "epoch_seconds"):
            setattr(self, key, list(state[key][:epochs]))
        self.initial, self.initial_mean = state["initial"], state["initial_mean"]

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.time() - self._t)
        self.active.append([layer.active_binary_convs for layer in pabt_layers(self.model)])
        opt = self.model.optimizer
        inner = getattr(opt, "default", None) or opt  # CaseOptimizer: its default (Adam)
        lr = getattr(inner, "learning_rate", None)
        if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(inner.iterations)
        self.learning_rates.append(None if lr is None else float(tf.keras.backend.get_value(lr)))


class EventLog:
    """Saves and restores the pruning callback's per-event records across pieces."""

    def __init__(self, pruning):
        self.pruning = pruning

    def state(self) -> list[dict]:
        return list(self.pruning.events)

    def restore(self, state: list[dict], epochs: int) -> None:
        self.pruning.events[:] = state


class EvaluateBeforePruning(tf.keras.callbacks.Callback):
    """Test accuracy of the unpruned multi-base network, measured at the beginning of the
    first pruning event's batch (before the pruning callback acts: list it first)."""

    def __init__(self, step: int, dataset: tf.data.Dataset, steps_per_epoch: int,
                 ignore_label: int | None = None):
        super().__init__()
        self.step, self.dataset, self.steps_per_epoch = step, dataset, steps_per_epoch
        self.ignore_label = ignore_label
        self.accuracy: float | None = None
        self._seen = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self._seen == self.step and self.accuracy is None:
            self.accuracy = accuracy(self.model, self.dataset, self.ignore_label)
        self._seen += 1

    def state(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy}

    def restore(self, state: dict[str, Any], epochs: int) -> None:
        self.accuracy = state["accuracy"]
        self._seen = epochs * self.steps_per_epoch
