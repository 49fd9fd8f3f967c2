"""Plots of the experiments."""

from pabt_tf.runs.plots import plot_comparison, plot_run  # noqa: F401
