"""A training run as a directory: configuration → data, model, `fit` with pruning,
evaluation, conversion, and the records a run leaves (DESIGN.md §3).

- `train`: `train(config)` and its `DEFAULTS`, `reconvert(run_dir)`.
- `state`: resumable runs (`RunLock`, `RunProgress`, the backup of `fit`).
- `records`: JSON written atomically.
- `plots`: the pruning figure of a run (`plot_run`).
- `distill`: self-distillation from the unpruned multi-base network.

`pabt-quickstart` and the experiment programs (`python -m experiments.train`, `compare`,
...) are built on it. Importing `pabt_tf` does not import this package (it needs
matplotlib).
"""
