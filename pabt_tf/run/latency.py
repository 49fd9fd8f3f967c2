"""A training run pruned to a latency target (issue 28): the target and table the
pruning callback gets, and the predicted vs measured latency of the final flatbuffer
that go into `results.json`."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["latency_target", "latency_results"]


def latency_target(config: dict, model, out: str) -> dict[str, Any]:
    """The pruning callback's latency arguments of a run with `latency_budget_ms` or
    `latency_budget_x_bnn` (a multiple of the BNN twin's measured latency): the table
    from `latency_table` (a JSON path), else the run's own `latency_table.json` (a
    resumed run keeps the table it started with), else measured now on this host
    (1 thread, indirect BGEMM) on the unpruned model and saved there."""
    from pabt_tf.export import LatencyTable, latency_table

    ms, times = config["latency_budget_ms"], config["latency_budget_x_bnn"]
    if ms is None and times is None:
        return {}
    if ms is not None and times is not None:
        raise ValueError("give `latency_budget_ms` or `latency_budget_x_bnn`, not both.")
    saved = os.path.join(out, "latency_table.json")
    if config["latency_table"]:
        table = LatencyTable.load(config["latency_table"])
    elif os.path.exists(saved):
        table = LatencyTable.load(saved)
    else:
        print("Measuring the LCE latency table (host, 1 thread, indirect BGEMM)...", flush=True)
        table = latency_table(model, threads=1)
        table.save(saved)
    if times is not None:
        if table.bnn_ms is None:
            raise ValueError(f"`latency_budget_x_bnn`: the latency table {config['latency_table']!r} "
                             "has no measured BNN latency (bnn_ms); give latency_budget_ms.")
        ms = times * table.bnn_ms
    return {"latency_budget_ms": ms, "latency_table": table}


def latency_results(model, pruning, tflite: str | None) -> dict[str, Any]:
    """Predicted vs measured latency of the run's final flatbuffer (LCE interpreter on
    this host, 1 thread, indirect BGEMM, thread clock; `Latency.settled_ms`, the
    statistic latency tables are anchored at).

    The flatbuffer is timed in the same interleaved rounds as its BNN twin (every PaBT
    layer at one binary convolution), and their paired ratio times the table's `bnn_ms`
    is the measurement on the table's scale (`measured_latency_bnn_anchored_ms`): load
    that differs between when the table was measured and the end of training (a shared
    machine) cancels out of it, where it inflates `measured_latency_ms`."""
    from pabt_tf.export import bnn_twin, host_latencies, paired_ratio
    from pabt_tf.export.latency_measure import _input_shape

    table = pruning.latency_table
    info: dict[str, Any] = {
        "latency_target_ms": pruning.latency_budget_ms,
        "predicted_latency_ms": table.predict_model(model),
        "latency_table_bnn_ms": table.bnn_ms,
        "latency_table_source": table.how,
    }
    if tflite and os.path.exists(tflite):
        with open(tflite, "rb") as f:
            flatbuffers = {"model": f.read()}
        if table.bnn_ms:
            flatbuffers["bnn"] = bnn_twin(model, input_shape=_input_shape(flatbuffers["model"]))
        timed = {t.label: t for t in host_latencies(flatbuffers, kernels=("indirect_bgemm",), rounds=7,
                                                    repeats=5, clock="thread")}  # fmt: skip
        # The statistic the table is anchored at, so target, prediction and measurement
        # compare like with like; the plain median is kept beside it.
        info["measured_latency_ms"] = timed["model"].settled_ms
        info["measured_latency_median_ms"] = timed["model"].median_ms
        info["measured_latency"] = ("LCE interpreter, 1 thread, indirect BGEMM, thread clock, "
                                    "7 rounds x 5 runs: median over rounds of each round's fastest")
        if "bnn" in timed:
            ratio = paired_ratio(timed["model"], timed["bnn"], statistic="min")
            info["measured_latency_vs_bnn_twin"] = ratio
            info["measured_latency_bnn_anchored_ms"] = ratio * table.bnn_ms
    return info
