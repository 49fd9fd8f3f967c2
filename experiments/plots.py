"""Plots of the experiments."""

from pabt_tf.run.plots import plot_comparison, plot_run  # noqa: F401
