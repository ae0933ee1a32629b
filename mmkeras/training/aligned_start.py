"""`train --init-from ALIGN_RUN`: a classifier that starts from an align run's towers.

The classifier is built on the align run's own backbone layers (weights,
tokenizer and image normalisation included: a `tiny` BERT's vocabulary is
learned from the align run's texts, so rebuilding it from the SPEC would not
fit), and takes over the projections and temperature (`ALIGNED_LAYERS`) that
a `match` classifier shares with the dual encoder. The fusion and the logits
start from scratch.

Example:
>>> config = aligned_config(RunConfig(data="train.csv", out="runs/match", task="match",
...                                   init_from="runs/align"))                        # doctest: +SKIP
>>> start = load_aligned_start(config.init_from)                                     # doctest: +SKIP
>>> model, _ = build_model(num_classes=2, head=get_task("match").head(["mismatch", "match"], config),
...                        backbones=start.backbones)                                 # doctest: +SKIP
>>> copy_aligned_layers(model, start.model)                                          # doctest: +SKIP
"""

import dataclasses

import keras

from mmkeras.config import RunConfig
from mmkeras.errors import UserError
from mmkeras.models.dual_encoder import is_dual_encoder
from mmkeras.models.embedding_heads import ALIGNED_LAYERS
from mmkeras.models.text_backbones import BACKBONE_NAME as TEXT_BACKBONE
from mmkeras.models.text_backbones import TextBackbone
from mmkeras.models.vision_backbones import BACKBONE_NAME as VISION_BACKBONE
from mmkeras.models.vision_backbones import VisionBackbone
from mmkeras.quantization.run_loading import load_run
from mmkeras.runs import load_run_config


@dataclasses.dataclass
class AlignedStart:
    """An align run's dual encoder and its towers, ready for `build_model(backbones=...)`.

    Args:
        model: the align run's dual encoder.
        backbones: its `(TextBackbone, VisionBackbone)`.
    """

    model: keras.Model
    backbones: tuple[TextBackbone, VisionBackbone]


def aligned_config(config: RunConfig) -> RunConfig:
    """`config` with the align run's backbone SPECs, sequence length and embedding width.

    The classifier is built on the align run's layers, so these are what it
    really has; the run's `config.yaml` records them, not the flags' defaults.
    """
    aligned = load_run_config(config.init_from)
    return config.replace(
        text_backbone=aligned.text_backbone,
        vision_backbone=aligned.vision_backbone,
        sequence_length=aligned.sequence_length,
        embedding_dim=aligned.embedding_dim,
        image_size=aligned.image_size,
    )


def load_aligned_start(align_dir) -> AlignedStart:
    """Load an align run (`UserError` if `align_dir` is a run of another kind); call under the strategy's scope."""
    run = load_run(align_dir)
    if not is_dual_encoder(run.model):
        raise UserError("--init-from needs an align run (mmkeras align); this is a classifier run", path=align_dir)
    normalization = run.model.get_layer("image_normalization")
    text = TextBackbone(run.model.get_layer(TEXT_BACKBONE), run.preprocessor.tokenizer, pretrained=True)
    vision = VisionBackbone(
        run.model.get_layer(VISION_BACKBONE),
        run.preprocessor.image_size,
        normalization.scale,
        normalization.offset,
        pretrained=True,
        resample=run.preprocessor.resample,
        crop_pct=run.preprocessor.crop_pct,
    )
    return AlignedStart(run.model, (text, vision))


def copy_aligned_layers(model: keras.Model, dual_encoder: keras.Model):
    """Give `model`'s projection and temperature layers the dual encoder's weights (those it has)."""
    names = {layer.name for layer in model.layers}
    for name in ALIGNED_LAYERS:
        if name in names:
            model.get_layer(name).set_weights(dual_encoder.get_layer(name).get_weights())
