"""Subprocess entry point of tests/test_distributed.py (two logical CPU devices must be
configured before TensorFlow initializes its devices).

`python tests/_mirrored_worker.py OUT.json`: trains the same model on one device and under
`MirroredStrategy` over two logical CPUs, once for a single step, once for a short
`fit` with pruning and once with pruning to a latency budget, and writes every
replica's pruning state and the single-device one.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _training_utils import fmnist, pabt, sparse_ce, tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

BATCH, STEPS = 32, 12


def build():
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((28, 28, 1))
    # No BatchNormalization: per-replica batch statistics would make the replicated
    # function differ from the single-device one.
    h = tf.keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    h = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=2, activation_bases=3)(h)
    h = tf.keras.layers.MaxPool2D(2)(h)
    h = pabt.PaBTConv2D(8, 3, padding="same", weight_bases=3, activation_bases=2)(h)
    outputs = tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(h))
    model = pabt.PaBTModel(inputs, outputs, importance_momentum=0.5)
    # SGD, not Adam: Adam's first updates are ~lr·sign(g), which turns float-rounding
    # differences of near-zero gradients into different trajectories.
    model.compile(tf.keras.optimizers.SGD(0.05), sparse_ce())
    return model


def state(model, strategy=None):
    out = []
    for layer in pabt.pabt_layers(model):
        entry = {}
        for name in ("mask", "importance_variable", "gate_decay", "pruning_step"):
            var = getattr(layer, name)
            values = strategy.experimental_local_results(var) if strategy else [var]
            entry[name] = [tf.convert_to_tensor(v).numpy().tolist() for v in values]
        out.append(entry)
    return out


def latency_table(model):
    """A made-up table (no measurement): per-conv costs that differ between the layers,
    so that the latency ranking is not the plain one."""
    from pabt_tf.export import LatencyTable, LayerLatency

    rows = []
    for layer, per_conv in zip(pabt.pabt_layers(model), (0.5, 0.2)):
        shape = list(layer.reference_input_shape)
        rows.append(LayerLatency(layer.name, type(layer).__name__, shape,
                                 layer.compute_output_shape(shape).as_list(),
                                 layer.weight_bases, layer.activation_bases, 0.1, per_conv))
    return LatencyTable(layers=rows, rest_ms=1.0, threads=1, kernels="default",
                        source="host", how="made up")


def run(x, y, strategy, steps, prune, latency=False):
    if strategy is None:
        model = build()
    else:
        with strategy.scope():
            model = build()
    callbacks, extra = [], {}
    if prune:
        schedule = pabt.schedules.PolynomialDecay(2, 10, frequency=4)
        if latency:
            table = latency_table(model)
            low, high = table.range_ms()
            target = low + 0.4 * (high - low)
            callbacks = [pabt.PaBTPruningCallback(schedule, latency_budget_ms=target,
                                                  latency_table=table)]
            extra["target"] = target
        else:
            callbacks = [pabt.PaBTPruningCallback(schedule)]
    model.fit(x[: steps * BATCH], y[: steps * BATCH], batch_size=BATCH, shuffle=False,
              verbose=0, callbacks=callbacks)
    if latency:
        extra["predicted"] = latency_table(model).predict_model(model)
        return {"layers": state(model, strategy), **extra}
    return state(model, strategy)


def main(out_path):
    tf.config.experimental.enable_op_determinism()
    x, y = fmnist(STEPS * BATCH)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    result = {
        "one_step": {"single": run(x, y, None, 1, False), "mirrored": run(x, y, strategy, 1, False)},
        "fit": {"single": run(x, y, None, STEPS, True), "mirrored": run(x, y, strategy, STEPS, True)},
        "fit_latency": {"single": run(x, y, None, STEPS, True, latency=True),
                        "mirrored": run(x, y, strategy, STEPS, True, latency=True)},
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
