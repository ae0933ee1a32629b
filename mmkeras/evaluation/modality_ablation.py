"""`ModalityLogits`: a model's logits with both modalities, text only and image only, from one pass per image.

The modality ablation scores every row three times: as it is, without its
image and without its text, the way a missing modality reaches the model on
the device (zero pixels / an empty text, and the modality mask). Each chunk
of rows is preprocessed once (one decode per image) and the two ablated
inputs are built from it: they equal what the preprocessor gives for
`(text, None)` and `(None, image)`.

For a run folder's Keras model, the backbones also run once per row: the
model is split where their tokens enter the fusion
(`split_at_frozen_backbones`); the tokens of a missing text and of a missing
image are the same for every row, so they are computed once, and only the
head runs three times. A bundle's LiteRT model is one graph: it runs three
times on the shared preprocessed inputs.

TensorFlow is imported only for a run folder.

Example:
>>> logits = ModalityLogits(predict_logits, preprocessor, run.model)(inputs)  # doctest: +SKIP
>>> sorted(logits)                                                            # doctest: +SKIP
['fused', 'image_only', 'text_only']
"""

import time

import numpy as np

BACKBONES = ("text_backbone", "vision_backbone")
# A model split at its backbones needs these layers (every `build_model` classifier has them).
SPLIT_LAYERS = (*BACKBONES, "fusion")


class ModalityLogits:
    """Logits of a chunk of preprocessed rows with both modalities, text only and image only.

    Args:
        predict_logits: the model's `inputs -> logits` (used for bundles).
        preprocessor: the model's `MultimodalPreprocessor`.
        model: the run's Keras model, or `None` for a bundle.

    Attributes:
        seconds, rows: the time the model took on the rows with both
            modalities (preprocessing excluded), and those rows.
    """

    def __init__(self, predict_logits, preprocessor, model=None):
        self.predict_logits = predict_logits
        self.missing = preprocessor([None], [None])
        self.split = _split(model)
        if self.split is not None:
            from mmkeras.models.inference_function import inference_function  # a run's model: TensorFlow is loaded

            self._feature_step = inference_function(self.split.feature_model)
            self._head_step = inference_function(self.split.head_model)
            self.missing_tokens = self._features(self.missing)
        self.seconds, self.rows = 0.0, 0

    def __call__(self, inputs: dict) -> dict[str, np.ndarray]:
        """`{"fused", "text_only", "image_only"}` logits of `inputs` (the preprocessor's output)."""
        rows = len(inputs["modality_mask"])
        text_only_mask = inputs["modality_mask"] * np.float32([1, 0])
        image_only_mask = inputs["modality_mask"] * np.float32([0, 1])
        started = time.perf_counter()
        if self.split is None:
            fused = np.asarray(self.predict_logits(inputs))
            self._count(started, rows)
            missing_image = {"image": self._tiled("image", rows)}
            missing_text = {name: self._tiled(name, rows) for name in ("token_ids", "padding_mask")}
            text_only = self.predict_logits({**inputs, **missing_image, "modality_mask": text_only_mask})
            image_only = self.predict_logits({**inputs, **missing_text, "modality_mask": image_only_mask})
        else:
            text_tokens, image_tokens = self._features(inputs)
            fused = self._head(text_tokens, image_tokens, inputs["padding_mask"], inputs["modality_mask"])
            self._count(started, rows)
            missing_text_tokens, missing_image_tokens = (np.repeat(tokens, rows, 0) for tokens in self.missing_tokens)
            text_only = self._head(text_tokens, missing_image_tokens, inputs["padding_mask"], text_only_mask)
            missing_padding = self._tiled("padding_mask", rows)
            image_only = self._head(missing_text_tokens, image_tokens, missing_padding, image_only_mask)
        return {"fused": fused, "text_only": np.asarray(text_only), "image_only": np.asarray(image_only)}

    def milliseconds_per_row(self) -> float | None:
        return round(1000 * self.seconds / self.rows, 4) if self.rows else None

    def _count(self, started: float, rows: int):
        self.seconds += time.perf_counter() - started
        self.rows += rows

    def _tiled(self, name: str, rows: int) -> np.ndarray:
        return np.repeat(self.missing[name], rows, axis=0)

    def _features(self, inputs: dict) -> list[np.ndarray]:
        return list(self._feature_step(inputs))

    def _head(self, text_tokens, image_tokens, padding_mask, modality_mask) -> np.ndarray:
        # The head's inputs: the cached tokens in `feature_names` order, then `head_input_names`.
        named = {"padding_mask": padding_mask, "modality_mask": modality_mask}
        arguments = [text_tokens, image_tokens, *(named[name] for name in self.split.head_input_names)]
        return self._head_step(arguments)


def _split(model):
    """The model split at both backbones, or `None` (a bundle, or a model without those layers)."""
    if model is None or not all(_has_layer(model, name) for name in SPLIT_LAYERS):
        return None
    from mmkeras.models.backbone_split import split_at_frozen_backbones

    split = split_at_frozen_backbones(model, BACKBONES)
    if split.head_input_names != ["padding_mask", "modality_mask"]:
        return None
    return split


def _has_layer(model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)
