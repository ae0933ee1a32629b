"""`int16x8_tracing`: the model traced so that TFLite's 16x8 mode converts it and LiteRT runs every op.

The 16x8 mode (int16 activations, int8 weights) quantizes every op of the
model; Keras computations stop it in two ways:

- **Index wrapping.** Keras' `take` (embedding lookups, the padding-mask
  table of `masked_pooling.token_weights`) wraps negative indices with
  integer arithmetic on the int32 inputs. The 16x8 calibrator wants a range
  for such tensors and records none, so the conversion fails (`Max and min
  for dynamic tensors should be recorded during calibration: Failed for
  tensor serving_default_token_ids:0`, tensorflow/tensorflow#60799). Here
  every `take` is a plain GATHER (`compat.take_without_index_wrap`).
- **The layer norm, the masked softmax and attention** as in
  `integer_only_tracing`: the -1e9 mask fill would set the int16 scale of the
  scores (1e9 / 32767: every real score rounds to one value), and the layer
  norm's variance is a mean of squares (LiteRT has no int16
  SQUARED_DIFFERENCE kernel).

The saved model and every other export are untouched: the replacements exist
only while the 16x8 conversion traces the model.

Example:
>>> with int16x8_tracing():  # doctest: +SKIP
...     archive.add_endpoint("serving_default", call, input_signature=[signature])
"""

import contextlib

from mmkeras import compat
from mmkeras.export.integer_only_graph import integer_only_tracing


@contextlib.contextmanager
def int16x8_tracing():
    """Trace Keras models for the 16x8 mode: `integer_only_tracing`, every `take` a plain GATHER."""
    with integer_only_tracing(), compat.take_without_index_wrap():
        yield
