"""From a trained PaBT model to a verified Larq Compute Engine (LCE) flatbuffer.

DESIGN.md §1.4. One job per module, each usable on its own:

- `strip`: `strip_pabt(model)`, the plain Keras/Larq model computing the same function
  (every PaBT layer becomes its active binary convolutions, in the pattern LCE turns into
  `LceBconv2d`; `fused=True` fuses the weight bases of each activation base).
- `stripped_layers`: the layers a stripped model is made of.
- `flatbuffer`: `operator_list` / `operator_counts`, a flatbuffer's operators.
- `check`: `check_binary_convs`, did every binary convolution become (part of) an
  `LceBconv2d`?
- `verification`: `verify`, LCE's Python interpreter against Keras.
- `conversion`: `convert` / `convert_with_report`, all of the above in one call.
- `latency`: `host_latencies`, flatbuffers timed in LCE's interpreter on this host,
  interleaved (`paired_ratio` between two of them).
- `latency_tables`: `LatencyTable`, per-layer LCE latency as a function of the active
  binary convolutions (JSON); `latency_measure`: `latency_table(model)`, measured on this
  host, `table_from_profile`, read from a board's op profile, and `bnn_twin(model)`, the
  model converted with every PaBT layer at one binary convolution.
- `sweep`: `k_sweep`, the model converted with k active binary convolutions per layer
  (mask patterns, fused and unfused), and `time_sweep`, those variants timed against the
  `k = 1` network, for deployment benchmarks.

The graph rewriter `strip_pabt` is built on lives in `pabt_tf.graph` (`rewrite_model`,
`NodeContext`, re-exported here for code that imported them from this package).
"""

from pabt_tf.export import (
    check,
    conversion,
    flatbuffer,
    latency,
    latency_measure,
    latency_tables,
    strip,
    stripped_layers,
    sweep,
    verification,
)
from pabt_tf.export.check import (
    LCE_CUSTOM_OPS,
    BinaryConvCheck,
    check_binary_convs,
    check_operators,
    unrunnable_operators,
)
from pabt_tf.export.conversion import (
    ConversionError,
    ConversionReport,
    convert,
    convert_with_report,
)
from pabt_tf.export.flatbuffer import OperatorInfo, count_operators, operator_counts, operator_list
from pabt_tf.export.latency import (
    KERNELS,
    Latency,
    format_latency_table,
    host_latencies,
    load_text,
    paired_ratio,
)
from pabt_tf.export.latency_measure import (
    OpTime,
    bnn_twin,
    latency_table,
    parse_op_profile,
    table_from_profile,
)
from pabt_tf.export.latency_tables import LatencyTable, LayerLatency
from pabt_tf.export.strip import bconv_count, bconv_name, bconv_owner, parse_bconv_name, strip_pabt
from pabt_tf.export.stripped_layers import (
    ChannelBias,
    ChannelGroupSum,
    ChannelScale,
    DilatedQuantConv2D,
    ThresholdShift,
)
from pabt_tf.export.sweep import (
    PATTERNS,
    SweepPoint,
    format_sweep,
    k_sweep,
    pattern_mask,
    shares_activation_base,
    time_sweep,
)
from pabt_tf.export.verification import (
    VerificationResult,
    default_indirect_bgemm,
    sign_margins,
    verify,
)
from pabt_tf.graph import NodeContext, rewrite_model

__all__ = [
    *strip.__all__,
    *flatbuffer.__all__,
    *check.__all__,
    *verification.__all__,
    *conversion.__all__,
    *latency.__all__,
    *latency_measure.__all__,
    *latency_tables.__all__,
    *sweep.__all__,
    "rewrite_model",
    "NodeContext",
]
