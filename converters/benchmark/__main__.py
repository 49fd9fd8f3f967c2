"""`python -m converters.benchmark` runs `pabt-benchmark` (`pabt_tf.cli.benchmark`)."""

import sys

from pabt_tf.cli.benchmark import main

sys.exit(main())
