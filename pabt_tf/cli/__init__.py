"""The command-line programs installed with pabt_tf, and what they share.

| console script    | module                      | what it does                                         |
|-------------------|-----------------------------|------------------------------------------------------|
| `pabt-convert`    | `pabt_tf.cli.convert`       | trained PaBT model → verified LCE flatbuffer          |
| `pabt-benchmark`  | `pabt_tf.cli.benchmark`     | latency on this host or on an ARM board; k-sweep      |
| `pabt-quickstart` | `pabt_tf.cli.quickstart`    | train, prune to a BNN, convert, verify on Fashion-MNIST |

Shared plumbing: `common` (exit codes, `CliError`, argument checks, atomic writes),
`model_loading` (a Keras file loaded without running code it carries), `twins` (the
float and Larq baselines of a network). From a checkout the same programs also run as
`python -m converters.convert`, `python -m converters.benchmark` and
`python -m experiments.quickstart`.
"""
