"""Self-distillation for PaBT: the multi-base network teaches the BNN it is pruned into.

At the first pruning event a frozen copy of the still unpruned multi-base network (MBN)
is taken; from then on the training loss is

    (1 − λ) · CE(y, student) + λ · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

The teacher is the network itself at an earlier step (no extra model, no extra epochs);
its forward pass is skipped while λ is still 0.
"""

from __future__ import annotations

import tensorflow as tf

import pabt_tf
from pabt_tf.training import PaBTModel


@tf.keras.utils.register_keras_serializable(package="pabt_tf_experiments")
class SelfDistillingPaBTModel(PaBTModel):
    """A `PaBTModel` whose loss adds distillation from a frozen teacher (see module doc)."""

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def attach_teacher(self, teacher: tf.keras.Model, weight: float, temperature: float):
        # Not tracked: the teacher's weights are not the model's weights (get_weights,
        # checkpoints, model.save and export see only the student).
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"`weight` must be in (0, 1], got {weight!r}.")
        if temperature <= 0:
            raise ValueError(f"`temperature` must be positive, got {temperature!r}.")
        self._teacher = teacher
        self._distill_weight = weight
        self._temperature = float(temperature)
        with tf.init_scope():
            self._distill_active = tf.Variable(0.0, trainable=False, name="distill_active")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        loss = super().compute_loss(x, y, y_pred, sample_weight)
        teacher = getattr(self, "_teacher", None)
        if teacher is None:
            return loss
        w = self._distill_weight * self._distill_active
        T = self._temperature

        def kd():
            t = tf.nn.softmax(tf.stop_gradient(teacher(x, training=False)) / T)
            log_s = tf.nn.log_softmax(y_pred / T)
            kl = tf.reduce_sum(t * (tf.math.log(t + 1e-8) - log_s), axis=-1)
            return T * T * tf.reduce_mean(kl)

        kd_loss = tf.cond(w > 0, kd, lambda: tf.constant(0.0))
        return (1.0 - w) * loss + w * kd_loss


class TeacherSnapshot(tf.keras.callbacks.Callback):
    """Copy the model into its teacher and switch distillation on at `step` (list it
    before the `PaBTPruningCallback`, so the teacher is the unpruned network).

    With `path`, the teacher's weights are saved there when taken, so a run resumed after
    the snapshot (Keras `BackupAndRestore`) distils from the same teacher: the teacher is
    not part of the model, so no model checkpoint holds it.

    # Raises
        RuntimeError: a run resumes after its snapshot step and `path` holds no teacher
            (it would otherwise distil from the wrong network).
    """

    def __init__(self, step: int, path: str | None = None):
        super().__init__()
        self.step = step
        self.path = path
        self._seen: int | None = None
        self.taken_at: int | None = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._seen is not None:
            return
        # The first epoch of this process: a resumed run starts at a later one.
        steps = self.params.get("steps")
        if epoch and not steps:
            raise RuntimeError("Resuming a self-distillation run needs a known number of steps per epoch.")
        self._seen = epoch * int(steps or 0)
        if self._seen > self.step:
            if not (self.path and tf.io.gfile.exists(self.path + ".index")):
                raise RuntimeError(
                    f"Resuming at step {self._seen}, after the teacher snapshot (step "
                    f"{self.step}), but no saved teacher is at {self.path!r}; rerun from scratch."
                )
            self.model._teacher.load_weights(self.path)
            self.model._distill_active.assign(1.0)
            self.taken_at = self.step

    def on_train_batch_begin(self, batch, logs=None):
        if self._seen is None:  # driven without fit's epoch callbacks
            self._seen = 0
        if self._seen == self.step and self.taken_at is None:
            self.model._teacher.set_weights(self.model.get_weights())
            self.model._distill_active.assign(1.0)
            self.taken_at = self._seen
            if self.path:
                self.model._teacher.save_weights(self.path)
        self._seen += 1


def with_self_distillation(
    model: PaBTModel, weight: float = 0.5, temperature: float = 2.0
) -> SelfDistillingPaBTModel:
    """Wrap a functional `PaBTModel` (sharing its layers) and attach a teacher copy."""
    student = SelfDistillingPaBTModel(
        model.inputs, model.outputs, name=model.name,
        criterion=model.criterion, importance_momentum=model.importance_momentum,
    )  # fmt: skip
    teacher = tf.keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    if len(pabt_tf.pabt_layers(teacher)) != len(pabt_tf.pabt_layers(model)):
        raise ValueError("The teacher copy lost PaBT layers.")
    student.attach_teacher(teacher, weight, temperature)
    return student
