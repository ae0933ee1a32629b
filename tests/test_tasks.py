"""The Task objects: one per task, found by name, each owning its labels, head, loss, output and evaluation."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from mmkeras.config import TASKS as RUN_CONFIG_TASKS
from mmkeras.config import RunConfig
from mmkeras.data.manifest import read_manifest
from mmkeras.errors import UserError
from mmkeras.runs import METRICS_FILE
from mmkeras.runtime.bundle import BUNDLE_KINDS
from mmkeras.runtime.outputs import SIGMOID, SOFTMAX
from mmkeras.tasks.multilabel import DEFAULT_THRESHOLD
from mmkeras.tasks.registry import TASKS, get_task
from mmkeras.training.align_job import AlignJob
from mmkeras.training.trainer import TrainJob
from tests.helpers.cli import LogLines


def write_manifest(path, labels):
    path.write_text("text,image,label\n" + "".join(f"row {row},,{label}\n" for row, label in enumerate(labels)))
    return path


def test_the_registry_maps_every_run_config_task_and_align_to_a_task_of_that_name():
    for name in (*RUN_CONFIG_TASKS, "align"):
        assert get_task(name).name == name
    assert set(TASKS) == {*RUN_CONFIG_TASKS, "align"}
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        get_task("regression")


def test_each_task_names_its_output_its_bundle_kind_and_its_evaluation():
    outputs = {name: task.output for name, task in TASKS.items()}
    assert outputs == {"classify": SOFTMAX, "match": SOFTMAX, "multilabel": SIGMOID, "align": None}
    kinds = {name: task.bundle_kind for name, task in TASKS.items()}
    assert kinds == {"classify": "classifier", "match": "classifier", "multilabel": "multilabel",
                     "align": "dual_encoder"}
    assert set(kinds.values()) == set(BUNDLE_KINDS)
    evaluations = {name: task.evaluation for name, task in TASKS.items()}
    assert evaluations == {"classify": "classifier", "match": "classifier", "multilabel": "multilabel",
                           "align": None}


def test_the_jobs_ask_the_task_of_their_config_and_align_its_own():
    assert TrainJob(RunConfig(data="a.csv", out="runs/a", task="multilabel")).task is get_task("multilabel")
    assert AlignJob(RunConfig(data="a.csv", out="runs/a")).task is get_task("align")


def test_a_job_reads_again_no_manifest_it_was_handed_and_logs_each_bad_row_once(tmp_path):
    data, val = tmp_path / "data.csv", tmp_path / "val.csv"
    data.write_text("text,image,label\na red card,,x\na card,,\na blue card,,y\n", encoding="utf-8")
    val.write_text("text,image,label\na card,,\na red card,,x\n", encoding="utf-8")
    config = RunConfig(data=str(data), val=str(val), out=str(tmp_path / "run"), on_bad_row="skip")
    log = LogLines()
    logging.getLogger("mmkeras").addHandler(log)
    try:
        handed = read_manifest(data, on_bad_row="skip")  # as the CLI reads it before TensorFlow loads
        job = TrainJob(config, manifests=[handed])
        # The same file however it is named: was read (and its bad row logged) again by the job.
        assert job.read_manifest(tmp_path / "." / "data.csv") is handed
        assert [row.line for row in job.read_manifest(val).skipped] == [2]  # not handed: read by the task
    finally:
        logging.getLogger("mmkeras").removeHandler(log)
    assert log.lines == [f"skipped: {data}: line 3: empty label", f"skipped: {val}: line 2: empty label"]


def test_each_task_names_its_training_accuracy_by_what_it_measures():
    # The epoch lines and the report show these names; history.json and metrics.json keep `val_accuracy`.
    names = {name: task.figure_name("val_accuracy") for name, task in TASKS.items()}
    assert names == {"classify": "val_accuracy", "match": "val_accuracy", "multilabel": "val_exact_match@0.5",
                     "align": "val_in_batch_recall@1"}
    assert get_task("multilabel").figure_name("val_exact_match") == "val_exact_match"  # the tuned one: as it is


def test_the_classification_decoding_is_the_softmax_and_the_best_label():
    logits = np.array([[1.0, 3.0, -2.0], [800.0, 0.0, 799.0]], np.float32)  # the second would overflow exp()
    scores = get_task("classify").output.scores(logits)
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))  # float64, as the runtime
    np.testing.assert_allclose(scores, shifted / shifted.sum(axis=1, keepdims=True))
    labels = ["cat", "dog", "eel"]
    assert [get_task("classify").output.predicted_labels(row, labels, None) for row in scores] == [["dog"], ["cat"]]


def test_the_multilabel_decoding_keeps_every_label_at_or_above_its_threshold():
    output = get_task("multilabel").output
    scores = output.scores(np.array([0.0, 2.0, -3.0]))
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-np.array([0.0, 2.0, -3.0]))))
    assert output.activation == "sigmoid"
    assert output.predicted_labels(scores, ["a", "b", "c"], [0.5, 0.9, 0.01]) == ["a", "c"]  # 0.5 at 0.5 counts
    assert output.predicted_labels(scores, ["a", "b", "c"], [0.6, 0.9, 0.9]) == []


def test_the_multilabel_task_encodes_label_cells_from_the_training_and_validation_rows(tmp_path):
    train = write_manifest(tmp_path / "train.csv", ["red|ring", "blue", "red"])
    val = write_manifest(tmp_path / "val.csv", ["blue|square"])
    task = get_task("multilabel")
    config = RunConfig(data=str(train), val=str(val), out="runs/tags", task="multilabel")
    cells, labels = task.training_labels(config, read_manifest(train))
    assert cells == ["blue", "blue|square", "red", "red|ring"]
    assert labels == ["blue", "red", "ring", "square"]
    assert task.label_sets(["red|ring", "blue"], labels).tolist() == [[0, 1, 1, 0], [1, 0, 0, 0]]
    assert task.class_indices(["red"], labels) is None  # a row holds a set of labels, not a class
    task.check_labels_kept(read_manifest(train), cells)  # "blue|square" has no training row: not refused


def test_a_single_label_task_keeps_one_class_per_row(tmp_path):
    train = write_manifest(tmp_path / "train.csv", ["dog", "cat", "dog"])
    task = get_task("classify")
    cells, labels = task.training_labels(RunConfig(data=str(train), out="runs/a"), read_manifest(train))
    assert cells == labels == ["cat", "dog"] and task.label_sets(cells, labels) is None
    assert task.class_indices(["dog", "cat"], labels).tolist() == [1, 0]
    assert task.class_indices(["dog", "cow"], labels) is None
    with pytest.raises(UserError, match="'cat' have no usable training row"):
        task.check_labels_kept(read_manifest(write_manifest(tmp_path / "dogs.csv", ["dog"])), cells)


def test_new_rows_for_a_trained_run_keep_its_labels(tmp_path):
    train = write_manifest(tmp_path / "train.csv", ["red|ring", "blue"])
    config = RunConfig(data=str(train), out="runs/qat", task="multilabel")
    cells, label_sets = get_task("multilabel").run_labels(config, read_manifest(train), ["blue", "red", "ring"])
    assert cells == ["blue", "red|ring"] and label_sets.tolist() == [[1, 0, 0], [0, 1, 1]]
    with pytest.raises(UserError, match=r"label\(s\) ring are not the run's \(blue, red\)"):
        get_task("multilabel").run_labels(config, read_manifest(train), ["blue", "red"])
    assert get_task("classify").run_labels(config, read_manifest(train), ["cat", "dog"]) == (["cat", "dog"], None)


def test_the_match_task_checks_its_two_labels_before_any_model_is_built():
    config = RunConfig(data="pairs.csv", out="runs/match", task="match")
    with pytest.raises(UserError, match="--task match needs the labels match/mismatch"):
        get_task("match").head(["cat", "dog"], config)
    assert get_task("match").aligned_layers(config) == ()
    assert get_task("match").aligned_layers(config.replace(init_from="runs/align")) == (
        "text_projection", "image_projection", "logit_scale")
    assert get_task("classify").aligned_layers(config.replace(init_from="runs/align")) == ()


def test_the_match_head_adds_the_similarity_logits_to_the_classifier_logits():
    from mmkeras.models import build_model

    config = RunConfig(data="pairs.csv", out="runs/match", task="match", embedding_dim=8)
    head = get_task("match").head(["1", "0"], config)  # the match label first
    model, preprocessor = build_model(num_classes=2, texts=["a red circle"], seed=0, head=head, sequence_length=8)
    names = {layer.name for layer in model.layers}
    assert {"logits", "similarity_logits", "logit_scale", "match_logits"} <= names
    assert model.get_layer("similarity_logits").get_weights()[0].tolist() == [[0.5, -0.5]]
    plain, _ = build_model(num_classes=3, texts=["a red circle"], seed=0, sequence_length=8)
    assert plain.layers[-1].name == "logits"
    assert "similarity_logits" not in {layer.name for layer in plain.layers}


def test_only_a_multilabel_bundle_carries_thresholds_read_from_the_run(tmp_path):
    assert get_task("classify").bundle_thresholds(tmp_path, ["a", "b"]) is None
    multilabel = get_task("multilabel")
    assert multilabel.bundle_thresholds(tmp_path, ["a", "b"]) == [DEFAULT_THRESHOLD] * 2  # no validation rows
    (tmp_path / METRICS_FILE).write_text(json.dumps({"thresholds": {"a": 0.25, "b": 0.75}}))
    assert multilabel.bundle_thresholds(tmp_path, ["b", "a"]) == [0.75, 0.25]


def test_the_losses_are_the_tasks():
    assert get_task("classify").loss(None) is None  # the training loop's cross-entropy
    assert type(get_task("multilabel").loss(np.eye(2, dtype=np.float32))).__name__ == "MultiLabelLoss"
    assert type(get_task("align").loss(None)).__name__ == "ContrastiveLoss"


def test_the_tasks_import_without_tensorflow_or_keras():
    script = (
        "import sys\n"
        "from mmkeras.tasks.registry import TASKS\n"
        "loaded = sorted(name for name in ('tensorflow', 'keras', 'keras_hub') if name in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
