"""`mmkeras align`: the contrastive loss, one big batch across replicas, the run folder and its recall figures."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from mmkeras.cli.app import main
from mmkeras.quantization.run_loading import load_run
from mmkeras.tasks.contrastive_loss import ContrastiveLoss
from tests.helpers.cli import SAMPLES, run_cli, write_subset
from tests.helpers.training_runs import (
    TWO_LOGICAL_CPUS,
    finish,
    kill_at_first_checkpoint,
    max_difference,
    run,
    run_weights,
    start,
    stop,
)

PAIRS = SAMPLES / "matching" / "pairs.csv"
# 16 pairs, global batch 8: two updates an epoch, each replica of two holding 4 rows.
ALIGN_SETTINGS = ["--epochs", "2", "--batch-size", "8", "--seed", "3", "--embedding-dim", "16"]


def reference_loss(text, image, scale, groups):
    """Symmetric InfoNCE written out in NumPy, same-group pairs other than the true one left out."""
    logits = scale * text @ image.T
    excluded = (groups[:, None] == groups[None, :]) & ~np.eye(len(groups), dtype=bool)
    logits = np.where(excluded, -np.inf, logits)

    def cross_entropy(rows):
        shifted = rows - rows.max(axis=1, keepdims=True)
        return -(np.diag(shifted) - np.log(np.exp(shifted).sum(axis=1)))

    return 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))


def unit_rows(rng, rows, width):
    values = rng.normal(size=(rows, width)).astype("float32")
    return values / np.linalg.norm(values, axis=1, keepdims=True)


def test_contrastive_loss_is_symmetric_infonce_without_same_label_negatives():
    rng = np.random.default_rng(0)
    text, image = unit_rows(rng, 6, 4), unit_rows(rng, 6, 4)
    groups = np.array([0, 1, 0, 2, 3, 1], np.int32)
    outputs = {"text_embedding": text, "image_embedding": image, "logit_scale": np.full((6, 1), 5.0, "float32")}
    losses = ContrastiveLoss().per_example_loss(tf.constant(groups), outputs).numpy()
    np.testing.assert_allclose(losses, reference_loss(text, image, 5.0, groups), rtol=1e-5)
    # Without groups (every row its own) the same-label rows count as negatives again: a different loss.
    own = ContrastiveLoss().per_example_loss(tf.range(6), outputs).numpy()
    assert not np.allclose(own, losses)


def test_contrastive_loss_is_zero_for_perfectly_aligned_pairs_and_counts_them_correct():
    outputs = {"text_embedding": np.eye(3, dtype="float32"), "image_embedding": np.eye(3, dtype="float32"),
               "logit_scale": np.full((3, 1), 100.0, "float32")}
    loss = ContrastiveLoss()
    assert float(tf.reduce_max(loss.per_example_loss(tf.range(3), outputs))) < 1e-6
    assert float(loss.correct_predictions(tf.range(3), outputs)) == 3.0


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    return {
        "train": write_subset(PAIRS, folder / "pairs.csv", 16),
        "val": write_subset(SAMPLES / "matching" / "val_pairs.csv", folder / "val_pairs.csv", 12),
    }


def align_args(pairs, out, *extra):
    return ["align", "--data", str(pairs["train"]), "--val", str(pairs["val"]), "--out", str(out), "--json",
            *ALIGN_SETTINGS, *extra]


@pytest.fixture(scope="module")
def align_run(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("align") / "run"
    code = main(align_args(pairs, out))
    assert code == 0
    return out


def test_align_writes_a_dual_encoder_run_with_recall_both_ways(pairs, align_run):
    metrics = json.loads((align_run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2
    for direction in ("text_to_image", "image_to_text"):
        recall = metrics["val_recall"][direction]
        assert set(recall) == {"1", "5", "10"}
        assert 0.0 <= recall["1"] <= recall["5"] <= recall["10"] <= 1.0
    # What search compares with: chance (12 validation pairs, grouped by label) and the true pairs' cosine.
    labels = [line.split(",")[-1] for line in pairs["val"].read_text().splitlines()[1:]]
    chance = np.mean([labels.count(label) / len(labels) for label in labels])
    assert metrics["val_recall_chance"] == pytest.approx(chance, abs=1e-4)
    similarity = metrics["val_pair_similarity"]
    assert -1.0 <= similarity["p10"] <= similarity["median"] <= 1.0
    run = load_run(align_run)
    assert set(run.model.output) == {"text_embedding", "image_embedding", "logit_scale"}
    # The run records the concepts of the label column (they group rows; zero-shot reads them).
    assert run.labels == sorted({line.split(",")[-1] for line in pairs["train"].read_text().splitlines()[1:]})


def with_bad_pairs(manifest, folder):
    """`manifest` and three rows that are not true pairs: no image, no text, an image that is missing."""
    bad = folder / "with_bad_pairs.csv"
    rows = manifest.read_text(encoding="utf-8").splitlines()
    image, label = rows[1].split(",")[1:3]
    image = str((manifest.parent / image).resolve())
    bad.write_text("\n".join([*rows, "a red ring,,red ring", f",{image},{label}", f"a blue square,gone.png,{label}"])
                   + "\n", encoding="utf-8")
    return bad, len(rows) + 1  # the first added row's line


def test_align_lists_every_bad_pair_before_loading_tensorflow(pairs, tmp_path, capsys):
    manifest, first = with_bad_pairs(pairs["train"], tmp_path)
    code, _, err = run_cli(capsys, "align", "--data", manifest, "--out", tmp_path / "run")
    assert code == 2
    assert "3 bad rows" in err and "with_bad_pairs.csv" in err
    assert f"line {first}: a pair needs an image" in err and f"line {first + 1}: a pair needs a text" in err
    assert f"line {first + 2}: image not found: 'gone.png'" in err
    assert "loading TensorFlow" not in err and not (tmp_path / "run").exists()


def test_align_skips_bad_pairs_and_ends_with_its_recall_and_the_kept_epoch(pairs, tmp_path, capsys):
    manifest, first = with_bad_pairs(pairs["train"], tmp_path)
    args = [arg for arg in align_args({**pairs, "train": manifest}, tmp_path / "run", "--on-bad-row", "skip")
            if arg != "--json"]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    skipped = (tmp_path / "run" / "skipped_rows.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[1]) for line in skipped] == [first, first + 1, first + 2]
    summary, kept = out.splitlines()[-2:]
    assert "val recall@1 text->image" in summary and "(chance " in summary
    # As train ends: which epoch's weights early stopping kept (the align run once left that unsaid).
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert kept.startswith(f"kept epoch {metrics['kept_epoch']}'s weights (lowest val_loss ")


# The counterfactual: each replica's negatives are its own rows only (no all_gather).
PER_REPLICA_NEGATIVES = TWO_LOGICAL_CPUS + """
import mmkeras.tasks.contrastive_loss as contrastive_loss
contrastive_loss._gather = lambda value: value
contrastive_loss._replica_offset = lambda rows: tf.constant(0, tf.int32)
"""


@pytest.mark.distributed
def test_align_over_two_mirrored_replicas_trains_as_one_big_batch(pairs, tmp_path):
    """Negatives gathered across replicas: 2 replicas of 4 rows make the update of one process with 8."""
    single = run(align_args(pairs, tmp_path / "single", "--strategy", "one"), timeout=240)
    mirrored = run(align_args(pairs, tmp_path / "mirrored", "--strategy", "mirrored"), timeout=240,
                   prelude=TWO_LOGICAL_CPUS)
    local = run(align_args(pairs, tmp_path / "local", "--strategy", "mirrored"), timeout=240,
                prelude=PER_REPLICA_NEGATIVES)
    single_weights = run_weights(tmp_path / "single")
    assert abs(mirrored["loss"] - single["loss"]) < 1e-5
    # 1e-4, not the 1e-5 of `train`: Adam divides near-zero gradients by their own size, which magnifies
    # the rounding of a different summation order (measured 1.3e-5); per-replica negatives differ far more.
    assert max_difference(run_weights(tmp_path / "mirrored"), single_weights) < 1e-4
    assert max_difference(run_weights(tmp_path / "local"), single_weights) > 1e-3
    assert abs(local["loss"] - single["loss"]) > 1e-3


@pytest.fixture(scope="module")
def match_run(align_run, tmp_path_factory):
    """`train --task match --init-from` for one epoch at a learning rate that leaves the weights as loaded."""
    folder = tmp_path_factory.mktemp("match")
    train = write_subset(SAMPLES / "matching" / "train.csv", folder / "train.csv", 12)
    out = folder / "run"
    code = main(["train", "--data", str(train), "--out", str(out), "--task", "match", "--init-from", str(align_run),
                 "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e-12", "--fusion", "concat"])
    assert code == 0
    return out


@pytest.mark.slow
def test_train_init_from_starts_from_the_aligned_backbones_projections_and_tokenizer(align_run, match_run):
    aligned, matcher = load_run(align_run), load_run(match_run)
    for name in ("text_backbone", "vision_backbone", "text_projection", "image_projection", "logit_scale"):
        assert max_difference(matcher.model.get_layer(name).get_weights(),
                              aligned.model.get_layer(name).get_weights()) < 1e-6, name
    assert (match_run / "tokenizer.json").read_bytes() == (align_run / "tokenizer.json").read_bytes()
    assert matcher.config.sequence_length == aligned.config.sequence_length
    assert matcher.config.embedding_dim == 16


@pytest.mark.slow
def test_match_starts_from_the_aligned_similarity(match_run):
    """The match logit minus the mismatch logit grows with the cosine similarity, before any training."""
    run = load_run(match_run)
    assert run.labels == ["match", "mismatch"]
    weights = run.model.get_layer("similarity_logits").get_weights()[0]
    assert weights[0, 0] > 0 > weights[0, 1]


def test_task_match_refuses_labels_that_are_not_match_or_mismatch(align_run, tmp_path, capsys):
    train = write_subset(SAMPLES / "train.csv", tmp_path / "train.csv", 8)
    code, _, err = run_cli(capsys, "train", "--data", train, "--out", tmp_path / "run", "--task", "match")
    assert code == 2
    assert "--task match needs the labels match/mismatch, 1/0 or true/false" in err


@pytest.mark.slow
def test_init_from_refuses_a_classifier_run(match_run, tmp_path, capsys):
    train = write_subset(SAMPLES / "matching" / "train.csv", tmp_path / "train.csv", 8)
    code, _, err = run_cli(capsys, "train", "--data", train, "--out", tmp_path / "run", "--init-from", match_run)
    assert code == 2
    assert "--init-from needs an align run" in err


def test_zero_shot_classifies_images_by_label_names(align_run, tmp_path, capsys):
    concepts = write_subset(SAMPLES / "matching" / "concepts.csv", tmp_path / "concepts.csv", 10)
    code, out, err = run_cli(capsys, "evaluate", align_run, "--data", concepts, "--zero-shot",
                             "--prompt", "a photo of {label}", "--json")
    assert code == 0, err
    figures = json.loads(out)
    assert figures["n"] == 10 and figures["prompt"] == "a photo of {label}"
    assert figures["labels"] == sorted({line.split(",")[-1] for line in concepts.read_text().splitlines()[1:]})
    assert len(figures["confusion_matrix"]) == len(figures["labels"])


def test_evaluate_without_zero_shot_says_an_align_run_needs_it(align_run, tmp_path, capsys):
    concepts = write_subset(SAMPLES / "matching" / "concepts.csv", tmp_path / "concepts.csv", 4)
    code, _, err = run_cli(capsys, "evaluate", align_run, "--data", concepts)
    assert code == 2
    assert "evaluate it with --zero-shot" in err


def test_zero_shot_refuses_a_prompt_without_the_label(align_run, tmp_path, capsys):
    concepts = write_subset(SAMPLES / "matching" / "concepts.csv", tmp_path / "concepts.csv", 4)
    code, _, err = run_cli(capsys, "evaluate", align_run, "--data", concepts, "--zero-shot", "--prompt", "a photo")
    assert code == 2
    assert "--prompt must contain {label}" in err


@pytest.mark.distributed
def test_a_killed_align_run_resumes_to_the_uninterrupted_weights(pairs, tmp_path):
    settings = ("--deterministic", "--checkpoint-steps", "1")
    expected = run(align_args(pairs, tmp_path / "uninterrupted", *settings), timeout=240)
    interrupted = tmp_path / "interrupted"
    kill_at_first_checkpoint(align_args(pairs, interrupted, *settings), interrupted)
    resumed = start(align_args(pairs, interrupted, *settings, "--resume"))
    try:
        code, out, err = finish(resumed, timeout=240)
    finally:
        stop([resumed])
    assert code == 0, err[-3000:]
    assert "resuming from ckpt-" in err
    assert json.loads(out)["val_recall"] == expected["val_recall"]
    assert max_difference(run_weights(interrupted), run_weights(tmp_path / "uninterrupted")) < 1e-6


def test_an_aligned_start_keeps_the_align_runs_image_preprocessing(align_run, tmp_path):
    # A classifier started from an align run must resize and crop its images as the align run did.
    from mmkeras.training.aligned_start import load_aligned_start

    run = shutil.copytree(align_run, tmp_path / "run")
    settings = json.loads((run / "preprocessor.json").read_text())
    settings["image"].update(resample="bicubic", crop_pct=0.875)
    (run / "preprocessor.json").write_text(json.dumps(settings))
    vision = load_aligned_start(run).backbones[1]
    assert (vision.resample, vision.crop_pct) == ("bicubic", 0.875)


def test_an_align_run_of_unlabelled_pairs_loads(align_run, tmp_path):
    # Pairs without a label column save no concepts (labels.json is []): the run must still load and export.
    run = shutil.copytree(align_run, tmp_path / "run")
    (run / "labels.json").write_text("[]")
    assert load_run(run).labels == []
