"""`VGGBackbone`: keras-hub's VGG backbone with a complete config.

keras-hub 0.32's `VGGBackbone.get_config` returns only its architecture and
does not chain to `Backbone.get_config`, so a saved run loses the backbone's
name, `trainable` flag and dtype policy: reloaded, the `tiny` CNN was called
`vgg_backbone` instead of `vision_backbone`, and a CNN frozen by `--freeze`
or left frozen by LoRA came back trainable (so `mmkeras qat` trained it).
This subclass only adds those keys back.
"""

import keras
import keras_hub


@keras.saving.register_keras_serializable(package="mmkeras")
class VGGBackbone(keras_hub.models.VGGBackbone):
    """keras-hub's `VGGBackbone` whose config keeps `name`, `trainable` and `dtype`.

    Args:
        stackwise_num_repeats: convolutions per block.
        stackwise_num_filters: filters of each block's convolutions.
        image_shape: input image shape `(height, width, 3)`.
        **kwargs: `Backbone` arguments (`name`, `trainable`, `dtype`).

    Example:
    >>> backbone = VGGBackbone([1, 1], [8, 16], image_shape=(32, 32, 3), name="vision_backbone", trainable=False)
    >>> restored = VGGBackbone.from_config(backbone.get_config())
    >>> restored.name, restored.trainable
    ('vision_backbone', False)
    """

    def get_config(self):
        return {**keras_hub.models.Backbone.get_config(self), **super().get_config()}
