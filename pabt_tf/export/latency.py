"""Latency of LCE flatbuffers on this host, in LCE's Python interpreter.

`host_latencies` times several flatbuffers in interleaved rounds (the machine may be
shared: load that comes and goes spreads over all of them alike), `paired_ratio` compares
two of them round by round, `format_latency_table` prints them next to their float and
Larq twins. `pabt-benchmark` and the k-sweep (`pabt_tf.export.sweep`) are built on it.
On x86 the indirect-BGEMM kernels are LCE's fast ones (DESIGN.md §1.4).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

import numpy as np

__all__ = [
    "CLOCKS",
    "KERNELS",
    "Latency",
    "host_latencies",
    "paired_ratio",
    "format_latency_table",
    "load_text",
]

KERNELS = ("indirect_bgemm", "default")
CLOCKS = ("wall", "thread")


@dataclasses.dataclass
class Latency:
    """Latency of one flatbuffer under one interpreter setting.

    # Attributes
        label: which model (e.g. "model", "float", "larq").
        kernels: "indirect_bgemm", "default" (LCE's default bconv kernels) or "xnnpack".
        threads: interpreter threads.
        median_ms, min_ms: over all timed single-sample runs.
        runs: number of timed runs.
        round_ms: median of each interleaving round (for paired ratios).
        round_min_ms: fastest run of each round (another process can only add time to a
            run, so a round's fastest is its least disturbed; for paired differences).
    """

    label: str
    kernels: str
    threads: int
    median_ms: float
    min_ms: float
    runs: int
    round_ms: list = dataclasses.field(default_factory=list, repr=False)
    round_min_ms: list = dataclasses.field(default_factory=list, repr=False)

    @property
    def settled_ms(self) -> float:
        """The median over rounds of each round's fastest run: the latency of an
        undisturbed run. On an idle core it equals the median; on a shared one the median
        also counts the other processes (cache, an SMT sibling), this does not. Latency
        tables are anchored at it and the runs compare their flatbuffers by it."""
        return statistics.median(self.round_min_ms) if self.round_min_ms else self.min_ms


def paired_ratio(a: Latency, b: Latency, statistic: str = "median") -> float:
    """Median over interleaving rounds of `a`'s round statistic / `b`'s: robust to load
    that comes and goes during the run (both were timed in the same rounds).

    # Arguments
        a, b: latencies timed in the same interleaved rounds.
        statistic: `"median"` (each round's median, `round_ms`) or `"min"` (each round's
            fastest, `round_min_ms`: the least disturbed run, as `Latency.settled_ms`).

    # Returns
        The ratio; without per-round times, the ratio of the overall medians (`"median"`)
        or of `settled_ms` (`"min"`).

    # Raises
        ValueError: an unknown `statistic`.
    """
    if statistic not in ("median", "min"):
        raise ValueError(f"`statistic` must be 'median' or 'min', got {statistic!r}.")
    xs, ys = (a.round_ms, b.round_ms) if statistic == "median" else (a.round_min_ms, b.round_min_ms)
    if len(xs) != len(ys) or not xs:
        return a.median_ms / b.median_ms if statistic == "median" else a.settled_ms / b.settled_ms
    return statistics.median(x / y for x, y in zip(xs, ys))


def _interpreter(flatbuffer: bytes, threads: int, kernels: str):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    if kernels not in KERNELS + ("xnnpack",):
        raise ValueError(f"`kernels` must be one of {KERNELS + ('xnnpack',)}, got {kernels!r}.")
    return Interpreter(
        bytes(flatbuffer),
        num_threads=threads,
        use_indirect_bgemm=kernels == "indirect_bgemm",
        use_xnnpack=kernels == "xnnpack",
    )


def host_latencies(
    flatbuffers: dict[str, bytes],
    threads: tuple[int, ...] = (1,),
    kernels: tuple[str, ...] = KERNELS,
    rounds: int = 5,
    repeats: int = 3,
    warmup: int = 2,
    seed: int = 0,
    kernel_overrides: dict[str, str] | None = None,
    clock: str = "wall",
) -> list[Latency]:
    """Median single-sample latency of each flatbuffer, interleaved.

    For each thread count and kernel setting, every flatbuffer runs `repeats` timed
    single-sample inferences per round, round after round, so load from other processes
    spreads over all candidates alike; the median is over all `rounds · repeats` runs.

    # Arguments
        flatbuffers: `{label: flatbuffer}`; all must take the same input shape.
        threads: thread counts to measure.
        kernels: interpreter settings ("indirect_bgemm", "default", "xnnpack").
        rounds, repeats, warmup: timing schedule.
        kernel_overrides: `{label: kernels}` for models that always run with one setting
            (e.g. a float model with "xnnpack"), timed in every group.
        clock: `"wall"` (default: elapsed time) or `"thread"`: the CPU time of the
            calling thread (`time.thread_time`), one-thread runs only. With one thread
            LCE's interpreter computes in the calling thread, so on an idle core both
            are the latency; on a shared machine the thread clock leaves out the time
            other processes hold the core, which wall time counts.

    # Returns
        One `Latency` per (label, kernels, threads).

    # Raises
        ValueError: on an empty dict, bad counts, mismatched input shapes, or a flatbuffer
            that is not well-formed (`MalformedFlatbufferError`, before any interpreter
            sees it).
    """
    from pabt_tf.flatbuffer_guard import check_flatbuffer

    if not flatbuffers:
        raise ValueError("`flatbuffers` must not be empty.")
    for label, fb in flatbuffers.items():
        check_flatbuffer(fb, f"flatbuffer {label!r}")
    for name, value in (("rounds", rounds), ("repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    for t in threads:
        if not isinstance(t, int) or t < 1:
            raise ValueError(f"`threads` must hold positive integers, got {threads!r}.")
    if clock not in CLOCKS:
        raise ValueError(f"`clock` must be one of {CLOCKS}, got {clock!r}.")
    if clock == "thread" and any(t != 1 for t in threads):
        raise ValueError(f"`clock='thread'` times one-thread runs only, got threads={threads!r}.")
    now = time.perf_counter if clock == "wall" else time.thread_time
    rng = np.random.default_rng(seed)
    results = []
    for n_threads in threads:
        for kernel in kernels:
            overrides = kernel_overrides or {}
            interpreters = {
                label: _interpreter(fb, n_threads, overrides.get(label, kernel))
                for label, fb in flatbuffers.items()
            }
            shapes = {label: tuple(it.input_shapes[0]) for label, it in interpreters.items()}
            if len(set(shapes.values())) != 1:
                raise ValueError(f"flatbuffers take different input shapes: {shapes}.")
            x = rng.standard_normal(next(iter(shapes.values()))).astype(np.float32)
            times: dict[str, list[float]] = {label: [] for label in interpreters}
            per_round: dict[str, list[float]] = {label: [] for label in interpreters}
            round_min: dict[str, list[float]] = {label: [] for label in interpreters}
            for it in interpreters.values():
                for _ in range(warmup):
                    it.interpreter.predict([x])
            order = list(interpreters)
            for r in range(rounds):
                shift = r % len(order)  # rotate who goes first
                for label in order[shift:] + order[:shift]:
                    it = interpreters[label]
                    ts = []
                    for _ in range(repeats):
                        start = now()
                        it.interpreter.predict([x])
                        ts.append(1000.0 * (now() - start))
                    times[label] += ts
                    per_round[label].append(statistics.median(ts))
                    round_min[label].append(min(ts))
            for label, ts in times.items():
                used = (kernel_overrides or {}).get(label, kernel)
                results.append(
                    Latency(label, used, n_threads, statistics.median(ts), min(ts), len(ts),
                            per_round[label], round_min[label])
                )  # fmt: skip
    return results


def format_latency_table(results: list[Latency], baseline_float="float", baseline_larq="larq") -> str:
    """A table of latencies with ratios to the float and Larq twins measured with the same
    threads and interpreter setting (in the same interleaved group; `paired_ratio`)."""
    by_key = {(r.label, r.kernels, r.threads): r for r in results}
    lines = [
        f"{'model':<12} {'kernels':<15} {'threads':>7} {'median ms':>10} {'min ms':>8}"
        f" {'float/this':>11} {'this/larq':>10}"
    ]
    for r in results:
        flt = by_key.get((baseline_float, r.kernels, r.threads))
        lq_ = by_key.get((baseline_larq, r.kernels, r.threads))
        f_ratio = f"{paired_ratio(flt, r):.2f}x" if flt and r.label != baseline_float else ""
        l_ratio = (
            f"{paired_ratio(r, lq_):.3f}"
            if lq_ and r.label not in (baseline_larq, baseline_float)
            else ""
        )
        lines.append(
            f"{r.label:<12} {r.kernels:<15} {r.threads:>7} {r.median_ms:>10.2f} {r.min_ms:>8.2f}"
            f" {f_ratio:>11} {l_ratio:>10}"
        )
    return "\n".join(lines)


def load_text() -> str:
    """The machine's load average, for the record next to a measurement."""
    return "load average {:.2f} {:.2f} {:.2f} on {} cores".format(*os.getloadavg(), os.cpu_count())
