"""`python -m converters.convert`: `pabt-convert` from a checkout (the program is
`pabt_tf.cli.convert`; a package rather than `convert.py`, so that git follows that
module's history to `pabt_tf/cli/convert.py`)."""

from pabt_tf.cli.convert import main

__all__ = ["main"]
