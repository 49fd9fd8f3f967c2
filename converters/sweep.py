"""The k-sweep on this host: how a PaBT network's latency grows with its active binary
convolutions per layer, fused vs unfused export (issue 10).

Shared by `pabt-benchmark --k-sweep` (a user's model) and `experiments.bench_deploy`
(the synthetic benchmark network). The flatbuffers come from
`pabt_tf.export.k_sweep`; each `(k, mask)` is timed in its own interleaved group with
the `k = 1` network (`host_latencies`, indirect-BGEMM kernels), so every ratio is a
median of per-round ratios measured under the same load.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from pabt_tf.cli.benchmark import host_latencies, paired_ratio
from pabt_tf.cli.common import EXIT_CHECK_FAILED, EXIT_OK, CliError

__all__ = ["time_sweep", "format_sweep", "load_text", "run_k_sweep"]


def load_text() -> str:
    """The machine's load average, for the record next to a measurement."""
    return "load average {:.2f} {:.2f} {:.2f} on {} cores".format(*os.getloadavg(), os.cpu_count())


def time_sweep(
    points: Sequence,
    threads: Sequence[int],
    rounds: int,
    repeats: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Time the `SweepPoint`s of `pabt_tf.export.k_sweep` against their `k = 1` network.

    Per thread count and fused point: the `k = 1` network, the fused network and (when
    it is another graph) the unfused one are timed together, interleaved, so each ratio
    is paired within a short group (the load of a shared machine changes less within one
    group than over all of them).

    # Arguments
        points: from `k_sweep` (must include a fused `k = 1` point).
        threads: interpreter thread counts.
        rounds, repeats: `host_latencies`' schedule per group.
        progress: called with a line after each group (e.g. `print`).

    # Returns
        One dict per `(threads, k, mask)`: `fused_vs_k1`, `unfused_vs_k1`,
        `fused_vs_unfused` (paired ratios), `bconv_ops`, sizes, `shares_base`, `goal`
        (`0.9·k` where two active convolutions share an activation base, else `k`) and
        `goal_met`.

    # Raises
        ValueError: no fused `k = 1` point.
    """
    k1 = next((p for p in points if p.k == 1 and p.fused), None)
    if k1 is None:
        raise ValueError("the sweep needs the fused k = 1 network as its reference.")
    unfused = {(p.k, p.patterns): p for p in points if not p.fused}
    rows = []
    for t in threads:
        for p in (p for p in points if p.fused):
            u = unfused.get((p.k, p.patterns))
            group = {"k1": k1.flatbuffer}
            if p is not k1:
                group["fused"] = p.flatbuffer
                if u is not None and not u.same_as_fused:
                    group["unfused"] = u.flatbuffer
            results = host_latencies(group, (t,), ("indirect_bgemm",), rounds, repeats, seed=seed)
            by = {r.label: r for r in results}
            fused, base = by.get("fused", by["k1"]), by["k1"]
            ur = by.get("unfused", fused if u is not None else None)  # same graph: itself
            ratio = paired_ratio(fused, base)
            limit = (0.9 if p.shares_base else 1.0) * p.k
            rows.append({
                "threads": t, "k": p.k, "patterns": list(p.patterns),
                "shares_base": p.shares_base, "bconv_ops": p.bconv_ops,
                "unfused_bconv_ops": None if u is None else u.bconv_ops,
                "median_ms": fused.median_ms, "k1_median_ms": base.median_ms,
                "fused_vs_k1": ratio,
                "unfused_vs_k1": None if ur is None else paired_ratio(ur, base),
                "fused_vs_unfused": None if ur is None else paired_ratio(fused, ur),
                "same_graph": bool(u is not None and u.same_as_fused),
                "size": p.size, "unfused_size": None if u is None else u.size,
                "goal": limit, "goal_met": ratio <= limit, "load": os.getloadavg()[0],
            })  # fmt: skip
            if progress is not None:
                progress(f"  timed {t} thread(s), k={p.k} {','.join(p.patterns)}: "
                         f"{ratio:.2f}x k=1; {load_text()}")  # fmt: skip
    return rows


def format_sweep(rows: Sequence[dict]) -> str:
    """The sweep as a table: per `(threads, k, mask)` the `LceBconv2d` ops fused /
    unfused, latency relative to `k = 1` fused and unfused, fused / unfused, the goal and
    the flatbuffer sizes."""
    lines = [
        f"  {'thr':>3} {'k':>2} {'pattern(s)':<37} {'bconv f/u':>9} {'fused':>7} {'unfused':>10}"
        f" {'f/u':>6} {'goal':>6}      {'size fused / unfused B':>22}"
    ]
    for row in rows:
        if row["same_graph"]:
            u, fu = "same graph", ""
        else:
            u = "—" if row["unfused_vs_k1"] is None else f"{row['unfused_vs_k1']:.2f}x"
            fu = "" if row["fused_vs_unfused"] is None else f"{row['fused_vs_unfused']:.3f}"
        ops = f"{row['bconv_ops']}/{row['unfused_bconv_ops'] or '—'}"
        sizes = f"{row['size']} / {row['unfused_size'] or '—'}"
        mark = "ok" if row["goal_met"] else "OVER"
        lines.append(
            f"  {row['threads']:>3} {row['k']:>2} {','.join(row['patterns']):<37} {ops:>9} "
            f"{row['fused_vs_k1']:>6.2f}x {u:>10} {fu:>6} {row['goal']:>5.1f}x {mark:<4} "
            f"{sizes:>22}"
        )
    return "\n".join(lines)


def run_k_sweep(args) -> int:
    """`--k-sweep`: the Keras model next to the flatbuffer, converted per k and mask
    pattern (fused and unfused) and timed against its k = 1 network on this host."""
    from pabt_tf.cli.benchmark import _keras_model_path
    from pabt_tf.cli.model_loading import load_keras_model
    from pabt_tf.export import PATTERNS, ConversionError, k_sweep

    bad = [p for p in args.patterns if p not in PATTERNS]
    if bad:
        raise CliError(f"--patterns: unknown pattern(s) {bad}; choose from {list(PATTERNS)}.")
    path = _keras_model_path(args)
    if path is None:
        raise CliError(
            "--k-sweep converts the Keras model the flatbuffer came from; none found next to "
            f"{args.flatbuffer!r} (expected <name>.keras). Pass --keras-model PATH."
        )
    model = load_keras_model(path, unsafe=args.unsafe)
    ks = sorted(set(args.k_sweep) | {1})
    print(f"k-sweep of {path}: k = {ks}, patterns {args.patterns}; converting...", flush=True)
    try:
        points = k_sweep(model, ks, args.patterns)
    except ConversionError as err:
        raise CliError(f"--k-sweep: {err}", EXIT_CHECK_FAILED) from err
    except ValueError as err:  # no PaBT layers, a k outside 1..M·N, mixed (M, N)
        raise CliError(f"--k-sweep: {err}") from err
    print(f"Timing {args.rounds}x{args.repeats} interleaved runs per group; {load_text()}",
          flush=True)  # fmt: skip
    rows = time_sweep(points, args.threads, args.rounds, args.repeats)
    print("Latency relative to the k = 1 network (median of per-round ratios), LCE "
          "interpreter, indirect BGEMM; fused = pabt_tf.convert(fused=True), unfused = "
          "the default; goal 0.9k where convolutions share an activation base:")
    print(format_sweep(rows))
    print(f"after: {load_text()}")
    return EXIT_OK
