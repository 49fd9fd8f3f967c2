"""`python -m experiments.quickstart` from a checkout: the program installed as
`pabt-quickstart` (`pabt_tf.cli.quickstart`)."""

from pabt_tf.cli.quickstart import format_table, main

__all__ = ["format_table", "main"]

if __name__ == "__main__":
    main()
