"""What a PaBT network would cost deployed with k active binary convolutions per layer
(the k-sweep of `pabt-benchmark --k-sweep` and `experiments.bench_deploy`).

`k_sweep(model, ks)` converts the model once per `(k, mask pattern, fused or not)`, every
PaBT layer given the same mask, and restores the model's own masks afterwards;
`time_sweep(points, ...)` times each fused point in its own interleaved group with the
`k = 1` network (`pabt_tf.export.latency.host_latencies`, indirect-BGEMM kernels), so
every ratio is a median of per-round ratios measured under the same load; `format_sweep`
prints the result. Where the `k` active
convolutions sit matters to the fused export (`strip_pabt`): those sharing an activation
base share one bit-packing and, unless their weight bases are active on different sets
of activation bases, one `LceBconv2d`. Three patterns:

- `"same_activation"`: activation base by activation base (`k ≤ M`: one base, one fused
  `LceBconv2d` of `k · C_out` filters);
- `"same_weight"`: weight base by weight base (`k ≤ N`: `k` bases, `k` convolutions of
  `C_out` filters: nothing to fuse);
- `"spread"`: diagonal by diagonal, `(m, (m + s) mod N)` for `s = 0, 1, …` (as few per
  activation base as possible).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from pabt_tf.export.conversion import convert_with_report
from pabt_tf.export.flatbuffer import OperatorInfo
from pabt_tf.export.latency import host_latencies, load_text, paired_ratio
from pabt_tf.layers import PaBTLayer, pabt_layers

__all__ = [
    "PATTERNS",
    "pattern_mask",
    "shares_activation_base",
    "SweepPoint",
    "k_sweep",
    "time_sweep",
    "format_sweep",
]

PATTERNS = ("same_activation", "same_weight", "spread")


def _order(weight_bases: int, activation_bases: int, pattern: str) -> list[tuple[int, int]]:
    M, N = weight_bases, activation_bases
    if pattern == "same_activation":
        return [(m, n) for n in range(N) for m in range(M)]
    if pattern == "same_weight":
        return [(m, n) for m in range(M) for n in range(N)]
    if pattern == "spread":
        return [(m, (m + s) % N) for s in range(N) for m in range(M)]
    raise ValueError(f"`pattern` must be one of {PATTERNS}, got {pattern!r}.")


def pattern_mask(weight_bases: int, activation_bases: int, k: int, pattern: str) -> np.ndarray:
    """The `(M, N)` bool mask with the first `k` binary convolutions of `pattern` active.

    # Raises
        ValueError: `k` outside `1..M·N` or an unknown pattern.
    """
    order = _order(weight_bases, activation_bases, pattern)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(order):
        raise ValueError(f"`k` must be an integer in 1..{len(order)}, got {k!r}.")
    mask = np.zeros((weight_bases, activation_bases), bool)
    for m, n in order[:k]:
        mask[m, n] = True
    return mask


def shares_activation_base(mask: np.ndarray) -> bool:
    """Whether two active binary convolutions of `mask` share an activation base (the
    fused export can then run them as one `LceBconv2d`)."""
    return bool((np.asarray(mask, bool).sum(axis=0) >= 2).any())


@contextlib.contextmanager
def _masks(model: tf.keras.Model, mask_of: Callable[[PaBTLayer], np.ndarray]) -> Iterator[None]:
    """Set every PaBT layer's mask to `mask_of(layer)`, restoring the masks on exit."""
    layers = pabt_layers(model)
    saved = [layer.binary_conv_mask for layer in layers]
    try:
        for layer in layers:
            layer.set_binary_conv_mask(mask_of(layer))
        yield
    finally:
        for layer, mask in zip(layers, saved):
            layer.set_binary_conv_mask(mask)


def _structure(ops: Sequence[OperatorInfo]) -> list[tuple]:
    return [(op.name, op.input_shapes, op.output_shapes, sorted(op.options.items())) for op in ops]


@dataclasses.dataclass
class SweepPoint:
    """One converted variant of the network.

    # Attributes
        k: active binary convolutions per PaBT layer.
        patterns: the mask patterns giving this variant (several when their masks
            coincide, e.g. all of them for `k = 1` and `k = M·N`).
        fused: `strip_pabt`'s `fused`.
        shares_base: some layer has two active convolutions on one activation base.
        flatbuffer: the converted model.
        bconv_ops: `LceBconv2d` operators in it.
        same_as_fused: for an unfused point, its operators (types, shapes, options, in
            order) and size equal the fused one's: nothing to fuse, the same graph (the
            bytes differ only in tensor names).
    """

    k: int
    patterns: tuple
    fused: bool
    shares_base: bool
    flatbuffer: bytes = dataclasses.field(repr=False)
    bconv_ops: int
    same_as_fused: bool = False

    @property
    def label(self) -> str:
        return f"k{self.k}_{self.patterns[0]}_{'fused' if self.fused else 'unfused'}"

    @property
    def size(self) -> int:
        return len(self.flatbuffer)


def k_sweep(
    model: tf.keras.Model,
    ks: Sequence[int],
    patterns: Sequence[str] = PATTERNS,
    fused: Sequence[bool] = (True, False),
    **lce_options,
) -> list[SweepPoint]:
    """Convert `model` with `k` active binary convolutions per PaBT layer, for every `k`
    and mask pattern (same mask in every layer; patterns whose masks coincide are
    converted once), fused and/or unfused. The model's masks are restored afterwards.

    Every conversion is checked (`convert_with_report`, strict): each active binary
    convolution is (part of) an `LceBconv2d`.

    # Arguments
        model: a model with PaBT layers, all with the same `(M, N)`.
        ks: counts of active binary convolutions per layer, each in `1..M·N`.
        patterns: from `PATTERNS`.
        fused: which exports to convert (`strip_pabt`'s `fused`).
        **lce_options: passed to the LCE converter.

    # Returns
        `SweepPoint`s in order of `k`, pattern, fused first.

    # Raises
        ValueError: no PaBT layers, layers with different `(M, N)`, a bad `k` or pattern.
        ConversionError: a binary convolution did not become an `LceBconv2d`.
    """
    layers = pabt_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no PaBT layers.")
    shapes = {(layer.weight_bases, layer.activation_bases) for layer in layers}
    if len(shapes) != 1:
        raise ValueError(f"the PaBT layers have different (M, N): {sorted(shapes)}.")
    (M, N), = shapes
    points: list[SweepPoint] = []
    for k in ks:
        by_mask: dict[bytes, list[str]] = {}
        for pattern in patterns:
            by_mask.setdefault(pattern_mask(M, N, k, pattern).tobytes(), []).append(pattern)
        for key, names in by_mask.items():
            mask = np.frombuffer(key, bool).reshape(M, N)
            fused_report = None
            with _masks(model, lambda layer: mask):
                for variant in fused:
                    report = convert_with_report(model, fused=variant, **lce_options)
                    point = SweepPoint(
                        int(k), tuple(names), bool(variant), shares_activation_base(mask),
                        report.flatbuffer, report.bconv_ops,
                    )  # fmt: skip
                    if variant:
                        fused_report = report
                    elif fused_report is not None:
                        point.same_as_fused = (
                            report.flatbuffer_bytes == fused_report.flatbuffer_bytes
                            and _structure(report.operators) == _structure(fused_report.operators)
                        )
                    points.append(point)
    return points


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
