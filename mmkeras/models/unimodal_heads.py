"""`UnimodalHeads`: a text-only and an image-only classifier on the backbones' pooled tokens."""

import keras
from keras import ops

from mmkeras.models.masked_pooling import masked_mean, token_weights


@keras.saving.register_keras_serializable(package="mmkeras")
class UnimodalHeads(keras.layers.Layer):
    """Two linear classifiers, one per modality, on the mean of that modality's real tokens.

    Used only while training with `--modality-balance` (the saved model does
    not contain them): `aux` trains them with the fused head so each backbone
    gets its own supervised signal; `adaptive` trains them as probes on
    detached features (`detach=True`: no gradient reaches the backbones) that
    measure how much each modality already explains.

    Takes the fusion layers' call signature:
    `layer(text_tokens, text_mask, image_tokens, modality_mask)`.

    Args:
        num_classes: width of each head's logits.
        detach: stop gradients from the heads into the tokens.
        **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Returns:
        `(text_logits, image_logits)`, float32 [B, num_classes] each.

    Example:
    >>> import numpy as np
    >>> heads = UnimodalHeads(num_classes=3)
    >>> text, image = heads(np.ones((2, 5, 8), "float32"), np.ones((2, 5), "int32"),
    ...                     np.ones((2, 4, 12), "float32"), np.ones((2, 2), "float32"))
    >>> tuple(text.shape), tuple(image.shape)
    ((2, 3), (2, 3))
    """

    def __init__(self, num_classes, detach=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.detach = detach
        self.text_head = keras.layers.Dense(num_classes, dtype="float32", name="text_head")
        self.image_head = keras.layers.Dense(num_classes, dtype="float32", name="image_head")

    def build(self, text_tokens_shape, text_mask_shape, image_tokens_shape, modality_mask_shape):
        self.text_head.build((text_tokens_shape[0], text_tokens_shape[-1]))
        self.image_head.build((image_tokens_shape[0], image_tokens_shape[-1]))

    def call(self, text_tokens, text_mask, image_tokens, modality_mask):
        if self.detach:
            text_tokens, image_tokens = ops.stop_gradient(text_tokens), ops.stop_gradient(image_tokens)
        text_weights, image_weights = token_weights(text_mask, image_tokens, modality_mask, text_tokens.dtype)
        text = ops.cast(masked_mean(text_tokens, text_weights), "float32")
        image = ops.cast(masked_mean(image_tokens, ops.cast(image_weights, image_tokens.dtype)), "float32")
        return self.text_head(text), self.image_head(image)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "detach": self.detach})
        return config
