"""pabt_tf: Pruning as a Binarization Technique (PaBT) for Keras/Larq.

Importing this package makes `tf.keras` Keras 2 (see `pabt_tf._env`).
"""

from pabt_tf._env import ensure_keras2 as _ensure_keras2

_ensure_keras2()

from pabt_tf import layers, quantizers  # noqa: E402
from pabt_tf.layers import PaBTConv2D, PaBTDense, PaBTLayer, pabt_layers  # noqa: E402
from pabt_tf.summary import mean_binary_convs, summary  # noqa: E402
from pabt_tf.transform import from_model  # noqa: E402
from pabt_tf import training  # noqa: E402
from pabt_tf.training import PaBTModel  # noqa: E402
from pabt_tf import callbacks, schedules  # noqa: E402
from pabt_tf.callbacks import PaBTPruningCallback  # noqa: E402
from pabt_tf import export  # noqa: E402
from pabt_tf.export import convert, strip_pabt, verify  # noqa: E402
from pabt_tf import data, models  # noqa: E402

__version__ = "0.1.0"
