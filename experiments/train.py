"""`python -m experiments.train`: one training run (`pabt_tf.run.train`)."""

from absl import app

from pabt_tf.run.train import (  # noqa: F401
    DEFAULTS,
    _schedule,
    config_from_flags,
    define_flags,
    main,
    reconvert,
    train,
)

if __name__ == "__main__":
    define_flags()
    app.run(main)
