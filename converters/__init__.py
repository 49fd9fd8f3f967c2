"""Command-line conversion of PaBT models to LCE flatbuffers (`pabt-convert`),
verification, and latency benchmarks on the host and on ARM boards (`pabt-benchmark`)."""
