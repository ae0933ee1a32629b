"""`mmkeras.compat`: the only code that uses private Keras / keras-hub / LiteRT API, and what it relies on."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from mmkeras import compat
from mmkeras.models.cross_attention_fusion import CrossAttentionFusion
from mmkeras.models.vision_backbones import load_vision_backbone
from mmkeras.quantization.qat_transform import CONTAINER_CONV_NORM_PAIRS
from mmkeras.quantization.quantized_attention import QuantizedMultiHeadAttention
from mmkeras.quantization.quantized_layer import QuantizerSettings, convert_layer

REPOSITORY = Path(__file__).resolve().parents[1]
SCANNED_FOLDERS = ("mmkeras", "export", "cli")
# Installed package of each scanned folder (setuptools `package-dir`).
PACKAGES = {"mmkeras": "mmkeras", "export": "mmkeras.export", "cli": "mmkeras.cli"}
EXTERNAL_PACKAGES = ("keras", "keras_hub", "tensorflow")
ATTRIBUTE_FUNCTIONS = ("getattr", "hasattr", "setattr", "delattr")
# (file, private name) -> why it may stay outside compat.py.
ALLOWED = {
    ("mmkeras/quantization/quantized_attention.py", "_compute_attention"): (
        "overriding it is how Keras documents a custom attention computation; "
        "test_quantized_attention_replaces_the_attention_step checks Keras still calls it"
    ),
    ("cli/app.py", "_exit"): (
        "os._exit, Python's documented way to end a process without cleanup: a data-service server whose "
        "stop hangs must still end on Ctrl-C (test_ctrl_c_ends_a_server_whose_stop_hangs_with_exit_0)"
    ),
}


def is_private(name):
    return name.startswith("_") and not name.startswith("__")


def own_names(tree):
    """Private names a module defines itself: methods, class attributes, `self._x = ...` targets."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {name for name in names if is_private(name)}


def private_uses(tree):
    """(line, what) for every private access in a module's syntax tree."""
    defined = own_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
            modules += [f"{node.module}.{alias.name}" for alias in node.names if is_private(alias.name)]
        else:
            modules = []
        for module in modules:
            if any(part == "src" or is_private(part) for part in module.split(".")):
                yield node.lineno, f"import {module}"
        if isinstance(node, ast.Attribute):
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if node.attr == "src":
                yield node.lineno, ".src"
            elif is_private(node.attr) and not (on_self and node.attr in defined):
                yield node.lineno, node.attr
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_FUNCTIONS:
            for argument in node.args[1:2]:
                if isinstance(argument, ast.Constant) and is_private(str(argument.value)):
                    yield node.lineno, argument.value


def private_overrides(path, tree):
    """(line, name) for private methods a module's classes define over a Keras / keras-hub / TF class's own."""
    relative = path.relative_to(REPOSITORY).with_suffix("")
    module = importlib.import_module(".".join([PACKAGES[relative.parts[0]], *relative.parts[1:]]))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        mro = getattr(module, node.name).__mro__[1:]
        bases = [base for base in mro if base.__module__.startswith(EXTERNAL_PACKAGES)]
        for method in node.body:
            if isinstance(method, ast.FunctionDef) and is_private(method.name):
                if any(method.name in vars(base) for base in bases):
                    yield method.lineno, method.name


def scanned_files():
    for folder in SCANNED_FOLDERS:
        for path in sorted((REPOSITORY / folder).rglob("*.py")):
            if path != REPOSITORY / "mmkeras" / "compat.py":
                yield path


def test_private_api_is_used_only_through_compat():
    found, allowed_used = [], set()
    for path in scanned_files():
        relative = path.relative_to(REPOSITORY).as_posix()
        tree = ast.parse(path.read_text(), filename=relative)
        for line, what in [*private_uses(tree), *private_overrides(path, tree)]:
            if (relative, what) in ALLOWED:
                allowed_used.add((relative, what))
            else:
                found.append(f"{relative}:{line}: {what}")
    assert not found, "private API outside mmkeras/compat.py (add a wrapper there):\n" + "\n".join(found)
    assert allowed_used == set(ALLOWED), f"stale ALLOWED entries: {set(ALLOWED) - allowed_used}"


def test_the_scan_finds_each_kind_of_private_use():
    source = """
import keras
from keras.src.trainers.trainer import model_supports_jit
class Layer(keras.layers.Layer):
    def call(self, x):
        self._own = 1
        return self._own + self._tracker + keras_hub.src.models + x._keras_history + hasattr(x, "_operations")
"""
    found = {what for _, what in private_uses(ast.parse(source))}
    assert found == {"import keras.src.trainers.trainer", "_tracker", ".src", "_keras_history", "_operations"}


def tiny_encoder_model():
    inputs = keras.Input((4, 8))
    return keras.Model(inputs, keras_hub.layers.TransformerEncoder(16, 2, name="encoder")(inputs))


def test_flatten_layers_reaches_inside_keras_hub_blocks():
    types = {type(layer) for layer in compat.flatten_layers(tiny_encoder_model())}
    assert {keras_hub.layers.TransformerEncoder, keras.layers.MultiHeadAttention, keras.layers.EinsumDense} <= types


def test_model_supports_jit_follows_the_layers():
    model = tiny_encoder_model()
    assert compat.model_supports_jit(model)
    model.get_layer("encoder").supports_jit = False
    assert not compat.model_supports_jit(model)


class Subclassed(keras.Model):
    def call(self, inputs):
        return inputs


def test_is_functional_model():
    backbone = load_vision_backbone("tiny-vit").backbone
    assert compat.is_functional_model(tiny_encoder_model()) and compat.is_functional_model(backbone)
    assert not compat.is_functional_model(Subclassed()) and not compat.is_functional_model(keras.layers.Dense(2))


def test_graph_calls_producers_and_consumers():
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")
    norm = keras.layers.BatchNormalization(name="norm")
    features = conv(inputs)
    outputs = [norm(features), keras.layers.ReLU()(features)]
    keras.Model(inputs, outputs)
    assert compat.graph_call_count(norm) == 1 and compat.graph_call_count(conv) == 1
    assert compat.graph_producers(norm) == [conv]
    assert compat.graph_consumer_count(conv) == 2 and compat.graph_consumer_count(norm) == 0


def test_graph_nodes_run_a_part_of_a_model_in_training_mode_without_adding_calls():
    inputs = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    outputs = keras.layers.Dropout(0.5, name="dropout")(features)
    model = keras.Model(inputs, outputs)
    nodes = compat.graph_nodes(model)
    assert [node.operation.name for node in nodes] == ["conv", "dropout"]
    ones = np.ones((1, 6, 6, 4), "float32")
    dropped = compat.run_graph_nodes(nodes[1:], {id(features): ones}, True)[id(outputs)]
    assert set(np.unique(dropped)) == {0.0, 2.0}  # training reached the dropout
    assert compat.run_graph_nodes(nodes[1:], {id(features): ones}, False)[id(outputs)].numpy().tolist() == ones.tolist()
    spec = compat.run_graph_nodes(nodes, {id(inputs): keras.KerasTensor((1, 9, 9, 3))}, None, symbolic=True)
    assert spec[id(outputs)].shape == (1, 7, 7, 4)
    assert all(compat.graph_call_count(layer) == 1 for layer in model.layers)


def test_graph_call_arguments_are_the_fusion_layer_inputs():
    inputs = [keras.Input((5, 8)), keras.Input((5,)), keras.Input((4, 8)), keras.Input((2,))]
    fusion = CrossAttentionFusion(fusion_dim=8, num_heads=2, name="fusion")
    fusion(*inputs)
    assert [id(tensor) for tensor in compat.graph_call_arguments(fusion)] == [id(tensor) for tensor in inputs]


def test_keras_histories_kept_leaves_the_model_saveable():
    # A head built from an intermediate tensor and one of the model's own
    # inputs re-links that input (Keras 3.15), as `split_at_frozen_backbones` does.
    features, mask = keras.Input((3,), name="features"), keras.Input((4,), name="mask")
    hidden = keras.layers.Dense(4, name="hidden")(features)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.Multiply()([hidden, mask]))
    model = keras.Model({"features": features, "mask": mask}, logits)
    history = mask._keras_history
    with compat.keras_histories_kept(model.inputs):
        head = keras.Model([hidden, mask], model.output)
    assert mask._keras_history is history
    assert [layer["name"] for layer in model.get_config()["layers"]][-1] == "logits"
    assert head.output_shape == (None, 2)


LOCKED = "cannot add new elements of state"


def test_unlocked_tracker_lets_a_built_layer_take_a_variable():
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    with pytest.raises(ValueError, match=LOCKED):
        dense.scale = dense.add_weight(shape=(), name="scale")
    with compat.unlocked_tracker(dense):
        dense.scale = dense.add_weight(shape=(), name="scale")
    assert any(weight is dense.scale for weight in dense.weights)
    with pytest.raises(ValueError, match=LOCKED):
        dense.offset = dense.add_weight(shape=(), name="offset")


def test_optimizer_variable_key_matches_a_replicas_copy_to_its_variable():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        kernel, bias = keras.Variable(np.ones(3)), keras.Variable(np.zeros(3))
        optimizer = keras.optimizers.Adam()
    replica_copy = kernel.value.values[0]
    assert replica_copy is not kernel.value
    assert compat.optimizer_variable_key(optimizer, replica_copy) == compat.optimizer_variable_key(optimizer, kernel)
    assert compat.optimizer_variable_key(optimizer, bias) != compat.optimizer_variable_key(optimizer, kernel)


def built_attention(dropout=0.0):
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=dropout)
    attention.build((None, 3, 8), (None, 5, 8))
    return attention


def test_attention_internals_are_the_built_attention_step():
    internals = compat.attention_internals(built_attention(dropout=0.25))
    assert internals.dot_product_equation.count(",") == 1 and "->" in internals.dot_product_equation
    assert internals.combine_equation.count(",") == 1 and "->" in internals.combine_equation
    assert isinstance(internals.dropout_layer, keras.layers.Dropout) and internals.dropout_layer.rate == 0.25
    scores = np.zeros((1, 2, 3, 5), "float32")
    mask = np.array([[[1, 1, 0, 0, 0]] * 3], bool)
    probabilities = keras.ops.convert_to_numpy(internals.masked_softmax(scores, mask))
    np.testing.assert_allclose(probabilities[0, 0, 0], [0.5, 0.5, 0, 0, 0], atol=1e-6)


def test_quantized_attention_replaces_the_attention_step():
    # Float attention with dropout 0 runs the fused `dot_product_attention`;
    # the quantized subclass computes it explicitly in `_compute_attention`.
    attention = built_attention()
    rng = np.random.default_rng(0)
    query, value = rng.normal(size=(1, 3, 8)).astype("float32"), rng.normal(size=(1, 5, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(attention(query, value))
    names = QuantizedMultiHeadAttention.QUANTIZERS
    convert_layer(attention, QuantizedMultiHeadAttention, QuantizerSettings(num_bits=16), names)
    for name in names:
        getattr(attention, name).observing = True
    np.testing.assert_allclose(keras.ops.convert_to_numpy(attention(query, value)), expected, atol=1e-3)
    assert all(float(getattr(attention, name).calibrated.numpy()) == 1.0 for name in names)  # the override ran


def graph_op_types(function, *args) -> set[str]:
    return {op.type for op in tf.function(function).get_concrete_function(*args).graph.get_operations()}


def test_take_without_index_wrap_is_one_gather_inside_and_keras_take_after():
    table = tf.constant(np.arange(12, dtype="float32").reshape(6, 2))
    ids = tf.TensorSpec((1, 4), tf.int32)
    lookup = keras.layers.Embedding(6, 2)
    lookup.build((1, 4))
    with compat.take_without_index_wrap():
        inside = graph_op_types(lambda i: keras.ops.take(table, i, axis=0), ids)
        embedding = graph_op_types(lambda i: lookup(i), ids)
        np.testing.assert_array_equal(keras.ops.take(table, tf.constant([[5, 0]]), axis=0), [[[10, 11], [0, 1]]])
    after = graph_op_types(lambda i: keras.ops.take(table, i, axis=0), ids)
    assert "GatherV2" in inside and not {"Less", "SelectV2", "AddV2"} & inside
    assert "GatherV2" in embedding and not {"Less", "SelectV2"} & embedding
    assert {"Less", "SelectV2"} <= after  # Keras' own take again: its negative-index wrap, which the context drops


@pytest.mark.parametrize("spec", ["tiny-vit", "tiny-mobilenet"])
def test_keras_hub_block_classes_hold_the_convolutions_they_pair(spec):
    modules = {compat.mobilenet_module().__name__, compat.vit_layers_module().__name__}
    expected = {kind for kind in CONTAINER_CONV_NORM_PAIRS if kind.__module__ in modules}
    layers = compat.flatten_layers(load_vision_backbone(spec).backbone)
    found = {type(layer) for layer in layers} & expected
    assert found, f"no keras-hub block of {sorted(kind.__name__ for kind in expected)} in {spec}"
    for layer in layers:
        for conv_name, norm_name in CONTAINER_CONV_NORM_PAIRS.get(type(layer), ()):
            assert isinstance(getattr(layer, conv_name), (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
            assert isinstance(getattr(layer, norm_name), keras.layers.BatchNormalization)


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="features")])
    def linear(features):
        return {"scores": tf.nn.relu(tf.matmul(features, tf.ones((4, 3))))}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([linear.get_concrete_function()], tf.Module())
    path = tmp_path_factory.mktemp("litert") / "linear.tflite"
    path.write_bytes(converter.convert())
    return path


LIST_OPS_SCRIPT = """
import json, sys
from mmkeras.runtime.interpreter import list_ops
ops = [[op.name, op.input_dtypes, op.output_dtypes] for op in list_ops(sys.argv[1])]
print(json.dumps({"ops": ops, "loaded": sorted({"keras", "tensorflow"} & set(sys.modules))}))
"""


def test_litert_ops_details_list_ops_with_dtypes_without_tensorflow(tflite_file):
    completed = subprocess.run(
        [sys.executable, "-c", LIST_OPS_SCRIPT, str(tflite_file)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["loaded"] == []
    assert "FULLY_CONNECTED" in [name for name, _, _ in result["ops"]]
    assert all(inputs and outputs == ["float32"] for _, inputs, outputs in result["ops"])


def test_importing_the_runtime_and_compat_does_not_import_tensorflow():
    code = "import sys, mmkeras.compat, mmkeras.runtime; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


@pytest.fixture
def fresh_version_check():
    compat.check_versions.cache_clear()
    yield
    compat.check_versions.cache_clear()


def installed_keras(version):
    return lambda distribution: version if distribution == "keras" else compat.importlib.metadata.version(distribution)


def test_the_installed_versions_are_the_tested_ones(fresh_version_check):
    compat.check_versions()
    for distribution, tested in compat.TESTED_VERSIONS.items():
        assert compat.installed_version(distribution).startswith(f"{tested}.")


def test_an_untested_version_fails_with_what_to_do(fresh_version_check, monkeypatch):
    monkeypatch.delenv(compat.ALLOW_UNTESTED_VARIABLE, raising=False)
    monkeypatch.setattr(compat, "installed_version", installed_keras("3.16.0"))
    expected = r"tested with keras 3\.15; keras 3\.16\.0 is installed: pin keras==3\.15\.\* or upgrade mmkeras"
    with pytest.raises(compat.UntestedVersionError, match=expected):
        compat.check_versions()
    with pytest.raises(compat.UntestedVersionError, match=expected):
        compat.flatten_layers(tiny_encoder_model())  # the first use of a wrapper checks


def test_a_patch_release_passes(fresh_version_check, monkeypatch):
    monkeypatch.setattr(compat, "installed_version", installed_keras("3.15.9"))
    compat.check_versions("keras")


def test_an_untested_version_only_warns_when_allowed(fresh_version_check, monkeypatch):
    monkeypatch.setenv(compat.ALLOW_UNTESTED_VARIABLE, "1")
    monkeypatch.setattr(compat, "installed_version", installed_keras("4.0.1"))
    with pytest.warns(RuntimeWarning, match="keras 4.0.1 is installed"):
        assert len(compat.flatten_layers(tiny_encoder_model())) > 1


def test_a_library_mmkeras_never_tested_fails(fresh_version_check, monkeypatch):
    monkeypatch.delenv(compat.ALLOW_UNTESTED_VARIABLE, raising=False)
    monkeypatch.setattr(compat, "installed_version", lambda distribution: "2.14.0")
    with pytest.raises(compat.UntestedVersionError, match="not tested with tflite-runtime"):
        compat.check_versions("tflite-runtime")
