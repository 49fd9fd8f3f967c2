"""`python -m converters.convert` runs `pabt-convert` (`pabt_tf.cli.convert`)."""

import sys

from pabt_tf.cli.convert import main

sys.exit(main())
