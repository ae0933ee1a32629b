"""Splitting a `build_model` model where the frozen backbones' tokens enter the fusion.

The feature cache (`training.feature_cache`) stores what the feature model
computes and trains the head on it; the modality ablation of `evaluate`
(`evaluation.modality_ablation`) runs the backbones once and the head three
times. Both need the same split, so it lives with the models.
"""

import dataclasses

import keras

from mmkeras import compat


@dataclasses.dataclass(frozen=True)
class CacheableBackbone:
    """Where a backbone's tokens enter the fusion, and what they replace.

    Args:
        feature_name: the name of its cached tokens.
        fusion_argument: the tokens' position among the fusion layer's call
            arguments `(text_tokens, text_mask, image_tokens, modality_mask)`.
        model_input: the model input only this backbone consumes.
    """

    feature_name: str
    fusion_argument: int
    model_input: str


CACHEABLE_BACKBONES = {
    "text_backbone": CacheableBackbone("text_tokens", 0, "token_ids"),
    "vision_backbone": CacheableBackbone("image_tokens", 2, "image"),
}


@dataclasses.dataclass
class HeadSplit:
    """A model split where the frozen backbones' tokens enter the fusion.

    Args:
        feature_model: model inputs -> the cached tokens, in `feature_names` order.
        head_model: `[*cached tokens, *head_input_names inputs]` -> logits,
            sharing its layers (and so its weights) with the full model.
        feature_names: names of the cached tokens (`text_tokens`, `image_tokens`).
        head_input_names: the model inputs the head still takes.
    """

    feature_model: keras.Model
    head_model: keras.Model
    feature_names: list[str]
    head_input_names: list[str]


def split_at_frozen_backbones(model: keras.Model, frozen: tuple[str, ...]) -> HeadSplit:
    """Split a `build_model` model into a feature model and a head model.

    Args:
        model: a model from `build_model` (a layer named `fusion`).
        frozen: backbone layer names whose tokens are cached
            (`text_backbone`, `vision_backbone`).

    Returns:
        A `HeadSplit`.

    Example:
    >>> split = split_at_frozen_backbones(model, ("text_backbone", "vision_backbone"))  # doctest: +SKIP
    >>> split.head_input_names  # doctest: +SKIP
    ['padding_mask', 'modality_mask']
    """
    if not frozen:
        raise ValueError("nothing to cache: name at least one frozen backbone")
    backbones = [CACHEABLE_BACKBONES[name] for name in frozen]
    fusion_arguments = compat.graph_call_arguments(model.get_layer("fusion"))
    tokens = [fusion_arguments[backbone.fusion_argument] for backbone in backbones]
    skipped_inputs = {backbone.model_input for backbone in backbones}
    head_input_names = [name for name in model.input if name not in skipped_inputs]
    head_inputs = [*tokens, *(model.input[name] for name in head_input_names)]
    return HeadSplit(
        feature_model=keras.Model(model.input, tokens, name="cached_features"),
        head_model=_submodel(model, head_inputs),
        feature_names=[backbone.feature_name for backbone in backbones],
        head_input_names=head_input_names,
    )


def _submodel(model: keras.Model, inputs: list) -> keras.Model:
    """`keras.Model(inputs, model.output)` that leaves `model` saveable.

    Building a model from intermediate tensors re-links the model's own
    `keras.Input` tensors to new graph nodes (Keras 3.15), after which
    `model.get_config()` fails ("could not find node key"): put their
    history back.
    """
    with compat.keras_histories_kept(model.inputs):
        return keras.Model(inputs, model.output, name="head")
