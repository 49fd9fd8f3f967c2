"""Experiments: absl-flags programs (training, comparisons, benchmarks)."""
