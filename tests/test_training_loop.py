"""TrainingLoop and fit on small Keras models: accumulation, class weights, precision, early stopping, epoch order."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmkeras.config import RunConfig
from mmkeras.models.builder import build_model
from mmkeras.tasks.registry import get_task
from mmkeras.training.class_weights import balanced_class_weights
from mmkeras.training.fit import fit
from mmkeras.training.optimizers import make_optimizer
from mmkeras.training.precision import dtype_policy, resolve_policy, with_loss_scaling
from mmkeras.training.training_loop import TrainingLoop, batch_sizes, updates_per_epoch

ROWS, FEATURES, CLASSES = 20, 5, 3


def toy_data(rows=ROWS, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, FEATURES)).astype("float32")
    return features, (np.arange(rows) % CLASSES).astype("int32")


def toy_model():
    keras.utils.set_random_seed(7)
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])


class ToyEpochs:
    """The same fixed order every epoch (what fit needs: `for_epoch` and `num_examples`)."""

    def __init__(self, features, labels, batch_size):
        self.num_examples = len(labels)
        self.dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)

    def for_epoch(self, epoch):
        return self.dataset


def train_toy(batch_size, accumulation, epochs=2, **loop_args):
    features, labels = toy_data()
    model = toy_model()
    steps = updates_per_epoch(ROWS, batch_size, accumulation) * epochs
    optimizer = make_optimizer(RunConfig(), model, total_steps=steps)
    loop = TrainingLoop(model, optimizer, gradient_accumulation=accumulation, **loop_args)
    fit(loop, ToyEpochs(features, labels, batch_size), epochs=epochs, batch_size=batch_size)
    return model.get_weights(), int(optimizer.iterations.numpy())


def test_batch_sizes_and_updates_cover_the_epoch():
    assert batch_sizes(20, 8) == [8, 8, 4]
    assert updates_per_epoch(20, 4, 2) == 3  # groups of 8, 8 and a last, smaller 4


@pytest.mark.parametrize("jit_compile", [False, True])
def test_gradient_accumulation_equals_a_batch_that_many_times_bigger(jit_compile):
    # 20 rows: micro-batches of 4 in groups of 2 (8, 8, 4 rows) against batches of 8 (8, 8, 4).
    accumulated, accumulated_updates = train_toy(batch_size=4, accumulation=2, jit_compile=jit_compile)
    big, big_updates = train_toy(batch_size=8, accumulation=1, jit_compile=jit_compile)
    assert accumulated_updates == big_updates == 6
    for first, second in zip(accumulated, big):
        np.testing.assert_allclose(first, second, atol=1e-6)
    small, _ = train_toy(batch_size=4, accumulation=1, jit_compile=jit_compile)
    assert max(float(np.abs(a - b).max()) for a, b in zip(small, big)) > 1e-4  # not a test that cannot fail


@pytest.mark.parametrize("accumulation", [1, 2])
def test_each_step_is_traced_once_whatever_the_batch_sizes(accumulation):
    # 20 rows in batches of 8: 8, 8 and a last 4 in training, 6, 6, 6 and 2 in validation. A trace per batch
    # size cost up to 0.19 GB of peak RSS fine-tuning EfficientNet-Lite0 (docs/design.md#fine-tuning-peak-memory).
    features, labels = toy_data()
    loop = TrainingLoop(toy_model(), keras.optimizers.SGD(0.1), gradient_accumulation=accumulation, jit_compile=False)
    val_data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(6)
    fit(loop, ToyEpochs(features, labels, 8), val_data, epochs=2, batch_size=8)
    steps = [loop._update_step, loop._evaluate_step] + ([loop._accumulate_step] if accumulation > 1 else [])
    assert [step.experimental_get_tracing_count() for step in steps] == [1] * len(steps)


def test_class_weights_weigh_each_rows_loss():
    features, labels = toy_data()
    model = toy_model()
    weights = [0.5, 2.0, 1.0]
    loop = TrainingLoop(model, keras.optimizers.SGD(0.1), class_weights=weights, jit_compile=False)
    loss, _ = loop.evaluate(tf.data.Dataset.from_tensor_slices((features, labels)).batch(6))
    per_row = keras.losses.sparse_categorical_crossentropy(labels, model(features), from_logits=True).numpy()
    assert loss == pytest.approx(float(np.mean(per_row * np.take(weights, labels))), rel=1e-5)


def test_balanced_class_weights_even_out_the_classes():
    label_ids = [0] * 6 + [1] * 3 + [2]
    weights = balanced_class_weights(label_ids, 4)
    assert weights == pytest.approx([10 / 18, 10 / 9, 10 / 3, 0.0])
    counts = np.bincount(label_ids, minlength=4)
    assert np.allclose((counts * weights)[:3], counts.sum() / 3)  # every class with rows weighs the same in total
    assert balanced_class_weights([0, 1, 1, 0], 2) == [1.0, 1.0]


def test_fit_stops_early_and_restores_the_best_weights():
    features, labels = toy_data()
    # Validation labels disagree with training: val_loss rises once training learns anything.
    val_data = tf.data.Dataset.from_tensor_slices((features, (labels + 1) % CLASSES)).batch(8)
    model = toy_model()
    loop = TrainingLoop(model, keras.optimizers.Adam(0.05), jit_compile=False)
    snapshots = []
    original_train_epoch = loop.train_epoch

    def recording_train_epoch(*args, **kwargs):
        result = original_train_epoch(*args, **kwargs)
        snapshots.append(model.get_weights())
        return result

    loop.train_epoch = recording_train_epoch
    state = fit(loop, ToyEpochs(features, labels, 8), val_data, epochs=20, batch_size=8, patience=2)
    val_losses = state.history["val_loss"]
    best_epoch = int(np.argmin(val_losses))
    assert state.stopped_early and len(val_losses) == best_epoch + 3 < 20
    for kept, best in zip(model.get_weights(), snapshots[best_epoch]):
        np.testing.assert_array_equal(kept, best)


@pytest.mark.parametrize(("task", "accuracy"), [("multilabel", "exact_match@0.5"), ("classify", "accuracy")])
def test_the_epoch_line_names_the_accuracy_as_the_task_measures_it(caplog, task, accuracy):
    # A multilabel run's `accuracy` is every label right at 0.5: "val_accuracy 0.0000" read as a broken run.
    features, labels = toy_data()
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    loop = TrainingLoop(toy_model(), keras.optimizers.Adam(0.05), jit_compile=False)
    logger = logging.getLogger("mmkeras")
    logger.addHandler(caplog.handler)  # the CLI's handler may have stopped it propagating to caplog's
    try:
        with caplog.at_level(logging.INFO, logger="mmkeras"):
            state = fit(loop, ToyEpochs(features, labels, 8), data, epochs=1, batch_size=8,
                        figure_name=get_task(task).figure_name)
    finally:
        logger.removeHandler(caplog.handler)
    # The epoch's figures, not its progress lines; a set: caplog sees a record twice when the logger propagates.
    [line] = {record.getMessage() for record in caplog.records if record.getMessage().startswith("epoch 1/1  loss")}
    assert f" {accuracy} " in line and f" val_{accuracy} " in line
    assert ("val_accuracy" in line) == (accuracy == "accuracy")
    assert {"accuracy", "val_accuracy"} <= set(state.history)  # the files keep their keys


def test_mixed_bfloat16_trains_the_multimodal_model_on_cpu():
    policy = resolve_policy("bfloat16")
    with dtype_policy(policy):
        model, preprocessor = build_model(num_classes=2, texts=["a red circle", "a blue square"], seed=0)
    assert keras.config.dtype_policy().name == "float32"  # restored after building
    assert model.get_layer("fusion").compute_dtype == "bfloat16"
    assert model.get_layer("logits").compute_dtype == "float32"  # logits and loss stay float32
    inputs = preprocessor(["a red circle", "a blue square"] * 2, [None] * 4)
    dataset = tf.data.Dataset.from_tensor_slices((dict(inputs), np.array([0, 1, 0, 1], "int32"))).batch(4)
    before = [weight.copy() for weight in model.get_weights()]
    optimizer = with_loss_scaling(keras.optimizers.Adam(1e-3), policy)
    loss, _ = TrainingLoop(model, optimizer, jit_compile=False).train_epoch(dataset, num_examples=4, batch_size=4)
    assert np.isfinite(loss)
    assert all(variable.dtype == "float32" for variable in model.trainable_variables)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_float16_scales_the_loss_and_trains():
    policy = resolve_policy("float16")
    assert resolve_policy("auto") == ("mixed_float16" if tf.config.list_logical_devices("GPU") else "float32")
    with dtype_policy(policy):
        model = toy_model()
    optimizer = with_loss_scaling(keras.optimizers.SGD(0.1), policy)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    features, labels = toy_data()
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(10)
    before = model.get_weights()
    loss, _ = TrainingLoop(model, optimizer, jit_compile=False).train_epoch(dataset, num_examples=ROWS, batch_size=10)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
