"""The settings of a QAT fine-tune (`mmkeras qat`) and of its fake quantizers.

TensorFlow-free, so the CLI can check them and show their defaults before
TensorFlow is imported; every default lives here once.

Example:
>>> settings = QATSettings(epochs=3)
>>> settings.quantizer_settings()
QuantizerSettings(num_bits=8, ema_decay=0.99, integer_only=False, float_attention=True)
"""

import dataclasses
import math

from mmkeras.config import STRATEGIES
from mmkeras.errors import UserError

# tfmot's default 8-bit scheme (docs/design.md#qat-without-tensorflow-model-optimization).
NUM_BITS = 8
# Activation ranges follow a moving average of the batch min/max. tfmot's default decay is 0.999; QAT here
# is a fine-tune of a few epochs on small data, where 0.999 would keep the first batch's range almost unchanged.
EMA_DECAY = 0.99
UNKNOWN_LAYERS = ("error", "warn")
# QAT starts from trained weights: a tenth of the run's peak learning rate.
LEARNING_RATE_FACTOR = 0.1
# int8 export: calibrate on the manifest's rows up to this many (`export --calibration-rows`).
CALIBRATION_ROWS = 200


@dataclasses.dataclass(frozen=True)
class QuantizerSettings:
    """Bit width and range tracking of the fake quantizers.

    Args:
        num_bits: bit width of weights and activations (8 for int8 export;
            16 makes the transformed model nearly float, which tests use).
        ema_decay: moving-average decay of activation ranges.
        integer_only: also fake-quantize hard-swish (as int8 ADD and MUL), so
            that the int8 export keeps no compute float (for integer-only
            accelerators). Off (the default), hard-swish stays float, as in a
            post-training int8 export: XNNPACK runs HARD_SWISH only in float,
            and the int8 ADD/MUL form made the edge-sized model's QAT-int8
            2.0x the float latency (1.2x with hard-swish float).
        float_attention: leave the attention (queries, scores, Softmax,
            context) without fake quantization, unless `integer_only`; the
            int8 export then keeps the attention matmuls, softmax and the
            mask's path float as in a post-training export (faster on
            XNNPACK; the export's `FLOAT_OPS_IN_INT8`).
    """

    num_bits: int = NUM_BITS
    ema_decay: float = EMA_DECAY
    integer_only: bool = False
    float_attention: bool = True


@dataclasses.dataclass
class QATSettings:
    """How `mmkeras qat` fine-tunes (the CLI flags and the Python API fill it).

    Args:
        epochs: QAT epochs.
        learning_rate: peak learning rate; `None` is `LEARNING_RATE_FACTOR`
            times the run's.
        batch_size: the global batch size; `None` keeps the run's.
        calibration_batches: training batches that set the activation ranges
            before the first step.
        num_bits: quantizer bit width (8 for int8 export).
        ema_decay: moving-average decay of the activation ranges.
        integer_only: fake-quantize hard-swish and the attention too
            (`QuantizerSettings.integer_only`), for `export --integer-only`
            (`mmkeras qat --integer-only`).
        unknown_layers: `error` refuses a layer type the QAT transform does
            not know; `warn` names it in a warning and leaves it float.
        strategy: the tf.distribute strategy, as `mmkeras train --strategy`;
            `None` keeps the run's.
        checkpoint_steps: also write a resume checkpoint every this many
            optimizer updates (0: each epoch only); `None` keeps the run's.

    Example:
    >>> QATSettings(epochs=0)
    Traceback (most recent call last):
    ...
    mmkeras.errors.UserError: epochs must be at least 1, got 0
    """

    epochs: int = 2
    learning_rate: float | None = None
    batch_size: int | None = None
    calibration_batches: int = 8
    num_bits: int = NUM_BITS
    ema_decay: float = EMA_DECAY
    integer_only: bool = False
    unknown_layers: str = "error"
    strategy: str | None = None
    checkpoint_steps: int | None = None

    def __post_init__(self):
        for name in ("epochs", "calibration_batches", "num_bits", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1, got {value}")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise UserError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.unknown_layers not in UNKNOWN_LAYERS:
            raise UserError(f"unknown_layers must be one of {', '.join(UNKNOWN_LAYERS)}, got {self.unknown_layers!r}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise UserError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.checkpoint_steps is not None and self.checkpoint_steps < 0:
            raise UserError(f"checkpoint_steps must not be negative, got {self.checkpoint_steps}")

    def quantizer_settings(self) -> QuantizerSettings:
        return QuantizerSettings(num_bits=self.num_bits, ema_decay=self.ema_decay, integer_only=self.integer_only)
