"""Subprocess entry point of tests/test_resume.py.

`python tests/_resume_worker.py first DIR`: in one process, (a) an uninterrupted run,
(b) a run stopped after 2 of 4 epochs and saved with `model.save(.keras)`, (c) a run
interrupted at the start of epoch 2 with `BackupAndRestore` backing up.
`python tests/_resume_worker.py second DIR`: in a fresh process, continue (b) from the
`.keras` file and (c) from the backup. Every run writes its final pruning state to
`DIR/<name>.json`.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _training_utils import fmnist, pabt, sparse_ce, tf, tiny_fmnist_net  # noqa: E402

EPOCHS, STOP_EPOCH, BATCH, STEPS_PER_EPOCH = 4, 2, 32, 8


class Interrupt(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == STOP_EPOCH:
            raise KeyboardInterrupt("simulated interruption")


def pruning_callback():
    # Events at 2, 5, ..., 20; soft pruning over 4 steps, so the event at step 14 is
    # still decaying at the interruption (after step 15).
    return pabt.PaBTPruningCallback(
        pabt.schedules.PolynomialDecay(2, 20, power=2, frequency=3), decay_steps=4
    )


def build(seed=0):
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(seed)
    model = tiny_fmnist_net(bases=(2, 3), channels=(8, 8, 8), importance_momentum=0.8)
    model.compile(tf.keras.optimizers.Adam(0.003), sparse_ce(), metrics=["accuracy"])
    return model


def dump(model, path):
    state = [
        {
            "mask": layer.mask.numpy().tolist(),
            "importance": layer.importance.tolist(),
            "gate_decay": layer.gate_decay.numpy().tolist(),
            "step": int(layer.pruning_step.numpy()),
        }
        for layer in pabt.pabt_layers(model)
    ]
    with open(path, "w") as f:
        json.dump(state, f)


def main(phase, directory):
    tf.config.experimental.enable_op_determinism()
    x, y = fmnist(BATCH * STEPS_PER_EPOCH)
    fit = dict(batch_size=BATCH, shuffle=False, verbose=0)
    backup_dir = os.path.join(directory, "backup")
    keras_path = os.path.join(directory, "model.keras")
    if phase == "first":
        model = build()
        model.fit(x, y, epochs=EPOCHS, callbacks=[pruning_callback()], **fit)
        dump(model, os.path.join(directory, "full.json"))

        model = build()
        model.fit(x, y, epochs=STOP_EPOCH, callbacks=[pruning_callback()], **fit)
        model.save(keras_path)
        dump(model, os.path.join(directory, "stopped.json"))

        model = build()
        callbacks = [pruning_callback(), tf.keras.callbacks.BackupAndRestore(backup_dir), Interrupt()]
        try:
            model.fit(x, y, epochs=EPOCHS, callbacks=callbacks, **fit)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("not interrupted")
    else:
        model = tf.keras.models.load_model(keras_path)  # no custom_objects
        assert isinstance(model, pabt.PaBTModel), type(model)
        model.fit(x, y, epochs=EPOCHS, initial_epoch=STOP_EPOCH, callbacks=[pruning_callback()], **fit)
        dump(model, os.path.join(directory, "resumed_keras.json"))

        model = build(seed=123)  # different initial weights: everything comes from the backup
        # The pruning callback listed first: it must read the state BackupAndRestore restores.
        callbacks = [pruning_callback(), tf.keras.callbacks.BackupAndRestore(backup_dir)]
        model.fit(x, y, epochs=EPOCHS, callbacks=callbacks, **fit)
        dump(model, os.path.join(directory, "resumed_backup.json"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
