"""`align`: contrastive pretraining of a text and an image backbone on true pairs (`mmkeras align`).

A classifier trained from match/mismatch labels alone does not learn whether
a text agrees with an image (docs/design.md#alignment-before-matching);
aligning the two backbones first, CLIP-style, does. `AlignJob` is a
`TrainingJob` like `train` and `qat` (strategy, exact resume, checkpoints,
run folder); what differs is the model (`build_dual_encoder`), the data (true
pairs; a label column, when present, groups rows that are not each other's
negatives) and the loss (`ContrastiveLoss`). The pairs are read by `read_pairs`
(a row without a text or an image, or whose image is missing, is a bad row under
`on_bad_row`, checked before TensorFlow loads). Its final figures add recall@1/5/10
of validation retrieval in both directions, the recall@1 a random ranking would
get (`val_recall_chance`) and how the matching validation pairs score
(`val_pair_similarity`); `search` compares its results with both.

Example:
>>> result = align(RunConfig(data="pairs.csv", val="val_pairs.csv", out="runs/align"))  # doctest: +SKIP
>>> result.metrics["val_recall"]["text_to_image"]["1"]                                  # doctest: +SKIP
0.91
"""

import dataclasses
import logging
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.data.dataset import EpochDatasets, make_dataset
from mmkeras.data.manifest import Manifest
from mmkeras.errors import UserError
from mmkeras.evaluation.retrieval_metrics import retrieval_recall
from mmkeras.models.dual_encoder import ENCODER_INPUTS, IMAGE_EMBEDDING, TEXT_EMBEDDING, build_dual_encoder
from mmkeras.training.job import JobResult, PreparedRun, TrainingJob
from mmkeras.training.precision import dtype_policy, float32_copy, resolve_policy
from mmkeras.training.run_setup import checked_manifests
from mmkeras.training.trainer import prepare_backbones

logger = logging.getLogger("mmkeras")


def align(config: RunConfig, *, resume: bool = False, manifests: Sequence[Manifest] = ()) -> JobResult:
    """Align a text and an image backbone on the true pairs of `config.data` and write the run folder.

    Args:
        config: the run config (`data` and `out` required; `fusion`,
            `task` and the head settings do not apply).
        resume: continue the run in `config.out` from its last checkpoint.
        manifests: `config.data`'s and `config.val`'s true pairs, when the
            caller has read them already as the run reads them (the CLI
            does, before TensorFlow loads): not read, nor their skipped
            rows logged, again.

    Example:
    >>> align(RunConfig(data="pairs.csv", out="runs/align", epochs=20))  # doctest: +SKIP
    """
    if not config.data or not config.out:
        raise UserError("align needs a manifest of true pairs (--data) and a run folder (--out)")
    if config.cache_features:
        raise UserError("align does not cache features: both towers' outputs feed the loss through projections")
    if config.class_weight != "none":
        raise UserError("class weights do not apply to align: a pair has no class")
    return AlignJob(config, resume=resume, manifests=manifests).run()


class AlignJob(TrainingJob):
    """`mmkeras align`: a dual encoder trained with symmetric InfoNCE over in-batch negatives.

    Args:
        config: the run config.
        resume: continue from the run's last checkpoint.
    """

    name = "alignment"
    task_name = "align"  # its manifests are true pairs, its loss `ContrastiveLoss` (`AlignTask`)

    def prepare(self, strategy: tf.distribute.Strategy) -> PreparedRun:
        config = self.config
        pairs = self.read_manifest(config.data)
        policy = resolve_policy(config.mixed_precision)
        logger.info("building the dual encoder (%s text, %s vision)", config.text_backbone, config.vision_backbone)
        with strategy.scope(), dtype_policy(policy):
            model, preprocessor = build_dual_encoder(
                config.text_backbone,
                config.vision_backbone,
                sequence_length=config.sequence_length,
                embedding_dim=config.embedding_dim,
                texts=[row.text for row in pairs.rows],
                seed=config.seed,
                image_size=config.image_size,
            )
        # No label check: a pair's label only groups it (`_grouped`).
        pairs, val_pairs, skipped = checked_manifests(
            config, pairs, None, preprocessor, read_manifest=self.read_manifest
        )
        self.check_rows(pairs, val_pairs)
        groups, train_pairs = _grouped(pairs)
        with strategy.scope():
            prepare_backbones(model, config)
        train_epochs = EncoderEpochs(
            EpochDatasets(train_pairs, groups, preprocessor, batch_size=config.batch_size, seed=config.seed)
        )
        val_data = None
        if val_pairs is not None:
            val_groups, val_pairs = _grouped(val_pairs)
            val_data = make_dataset(
                val_pairs, val_groups, preprocessor, batch_size=config.batch_size, shuffle=False, seed=config.seed
            ).map(encoder_inputs)
        return PreparedRun(
            model=model,
            trained_model=model,
            preprocessor=preprocessor,
            labels=groups,
            train_manifest=train_pairs,
            train_epochs=train_epochs,
            val_data=val_data,
            skipped_rows=skipped,
            policy=policy,
            saved_labels=pairs.labels(),
        )

    def final_metrics(self, prepared: PreparedRun, model: keras.Model) -> dict:
        if prepared.val_data is None:
            return {}
        text, image, groups = embed_pairs(model, prepared.val_data)
        recall = retrieval_recall(text, image, groups)
        return {"val_recall": recall, **pair_figures(text, image, groups)}

    def final_model(self, prepared: PreparedRun) -> keras.Model:
        return prepared.model if prepared.policy == "float32" else float32_copy(prepared.model)


class EncoderEpochs:
    """`EpochDatasets` whose batches hold the dual encoder's inputs only (a pair has both modalities).

    Args:
        epochs: the `EpochDatasets` of the pairs.
    """

    def __init__(self, epochs: EpochDatasets):
        self.epochs = epochs
        self.num_examples = epochs.num_examples

    def for_epoch(self, epoch: int) -> tf.data.Dataset:
        return self.epochs.for_epoch(epoch).map(encoder_inputs)


def encoder_inputs(inputs, labels):
    """A batch of the model contract's inputs reduced to `ENCODER_INPUTS`."""
    return {name: inputs[name] for name in ENCODER_INPUTS}, labels


def embed_pairs(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(text embeddings, image embeddings, group ids)` of every pair in `dataset`, in order."""
    texts, images, groups = [], [], []
    for inputs, labels in dataset:
        outputs = model(inputs, training=False)
        texts.append(np.asarray(outputs[TEXT_EMBEDDING]))
        images.append(np.asarray(outputs[IMAGE_EMBEDDING]))
        groups.append(np.asarray(labels))
    return np.concatenate(texts), np.concatenate(images), np.concatenate(groups)


def pair_figures(text: np.ndarray, image: np.ndarray, groups: np.ndarray) -> dict:
    """What `search` compares with: the recall@1 of a random ranking and the cosine of the true pairs.

    Args:
        text: [N, D] text embeddings of the validation pairs.
        image: [N, D] their image embeddings (row i is text i's pair).
        groups: [N] group ids (rows of one group are each other's hits).

    Returns:
        `val_recall_chance`: the expected recall@1 of a random ranking (a
        query's chance of drawing one of its group's N candidates), and
        `val_pair_similarity`: the 10th percentile and the median of the true
        pairs' cosine similarity.
    """
    groups = np.asarray(groups)
    chance = float(np.mean([np.mean(groups == group) for group in groups]))
    unit_text = text / np.linalg.norm(text, axis=1, keepdims=True)
    unit_image = image / np.linalg.norm(image, axis=1, keepdims=True)
    cosine = np.sum(unit_text * unit_image, axis=1)
    return {
        "val_recall_chance": round(chance, 4),
        "val_pair_similarity": {"p10": round(float(np.percentile(cosine, 10)), 4),
                                "median": round(float(np.median(cosine)), 4)},
    }


def _grouped(pairs: Manifest) -> tuple[list[str], Manifest]:
    """`(group names, manifest labelled by group)`: rows of one label form a group when every row has a label;
    otherwise every row is its own group (its only positive is its own pair)."""
    if all(row.label is not None for row in pairs.rows):
        return pairs.labels(), pairs
    rows = [dataclasses.replace(row, label=f"line {row.line}") for row in pairs.rows]
    return sorted({row.label for row in rows}), Manifest(pairs.path, rows, pairs.skipped)
