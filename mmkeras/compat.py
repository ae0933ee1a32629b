"""The one place where mmkeras uses private Keras, keras-hub and LiteRT API.

mmkeras needs a few things no public API offers (docs/design.md#private-internals):
the layers nested inside keras-hub blocks, the call graph of a functional
model, new state on a built layer, MultiHeadAttention's attention step, the
optimizer's variable identity under tf.distribute, and a LiteRT model's op
list. Each wrapper below names the private API it relies on and why;
`tests/test_compat.py` checks that nothing else in the code reaches private
API and that every wrapper still behaves as relied on.

Private API changes without notice, so the first use of a wrapper checks the
installed version against `TESTED_VERSIONS` (`check_versions`) and raises
`UntestedVersionError` on an untested major.minor. Setting the environment
variable `MMKERAS_ALLOW_UNTESTED=1` turns that error into a warning.

This module imports nothing heavy: each wrapper imports Keras or keras-hub
when it is called, so the TensorFlow-free device runtime can use
`litert_ops_details`.

Example:
>>> import keras
>>> from mmkeras import compat
>>> inputs = keras.Input((4,))
>>> model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
>>> [layer.name for layer in compat.flatten_layers(model)][-1]
'logits'
"""

import contextlib
import dataclasses
import functools
import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable

from mmkeras import __version__

# Distribution -> the major.minor release mmkeras was tested with.
TESTED_VERSIONS = {
    "keras": "3.15",
    "keras-hub": "0.32",
    "ai-edge-litert": "2.3",
    "tensorflow": "2.21",
}
ALLOW_UNTESTED_VARIABLE = "MMKERAS_ALLOW_UNTESTED"
# The distribution that ships each LiteRT interpreter module `mmkeras.runtime` may load.
INTERPRETER_DISTRIBUTIONS = {
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
}


class UntestedVersionError(RuntimeError):
    """An installed library's version is one mmkeras was not tested with.

    Args:
        distribution: the package name (`keras`).
        installed: its installed version (`3.16.0`).
    """

    def __init__(self, distribution: str, installed: str):
        self.distribution = distribution
        self.installed = installed
        tested = TESTED_VERSIONS.get(distribution)
        if tested is None:
            message = f"mmkeras {__version__} was not tested with {distribution} ({installed} is installed)"
            advice = f"install one of {', '.join(sorted(TESTED_VERSIONS))} instead"
        else:
            message = (
                f"mmkeras {__version__} was tested with {distribution} {tested}; "
                f"{distribution} {installed} is installed"
            )
            advice = f"pin {distribution}=={tested}.* or upgrade mmkeras"
        super().__init__(f"{message}: {advice} ({ALLOW_UNTESTED_VARIABLE}=1 turns this error into a warning)")


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, or `None` when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def check_versions(*distributions: str):
    """Refuse installed libraries whose major.minor mmkeras was not tested with.

    Cached: each set of distributions is checked once per process. Libraries
    that are not installed are skipped (the device runtime has no Keras).

    Args:
        *distributions: package names; none: every one in `TESTED_VERSIONS`.

    Raises:
        UntestedVersionError: an untested version, unless the environment
            variable `MMKERAS_ALLOW_UNTESTED` is `1` (then it warns).

    Example:
    >>> check_versions("keras", "keras-hub")
    """
    for distribution in distributions or tuple(TESTED_VERSIONS):
        installed = installed_version(distribution)
        if installed is None or _major_minor(installed) == TESTED_VERSIONS.get(distribution):
            continue
        error = UntestedVersionError(distribution, installed)
        if os.environ.get(ALLOW_UNTESTED_VARIABLE) != "1":
            raise error
        warnings.warn(str(error), RuntimeWarning, stacklevel=2)


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def flatten_layers(model) -> list:
    """Every layer inside `model`, at any depth, `model` itself excluded.

    Wraps `Layer._flatten_layers(include_self=False, recursive=True)`:
    `model.layers` lists only the direct layers, and keras-hub blocks
    (TransformerEncoder, ViT and MobileNet blocks) keep their sub-layers as
    attributes that no public API lists.

    Args:
        model: a Keras layer or model.

    Example:
    >>> encoder = keras_hub.layers.TransformerEncoder(16, 2)  # doctest: +SKIP
    >>> encoder.build((None, 4, 8))  # doctest: +SKIP
    >>> "MultiHeadAttention" in {type(layer).__name__ for layer in flatten_layers(encoder)}  # doctest: +SKIP
    True
    """
    check_versions("keras")
    return list(model._flatten_layers(include_self=False, recursive=True))


def model_supports_jit(model) -> bool:
    """Whether XLA can compile `model` (every layer supports it, no op determinism).

    Wraps `keras.src.trainers.trainer.model_supports_jit`, the rule behind
    `compile(jit_compile="auto")`; Keras exposes the rule only through
    `compile`, and `TrainingLoop` compiles its own step.

    Args:
        model: a Keras model.

    Example:
    >>> model_supports_jit(keras.Sequential([keras.layers.Dense(2)]))  # doctest: +SKIP
    True
    """
    check_versions("keras")
    from keras.src.trainers import trainer

    return trainer.model_supports_jit(model)


def is_functional_model(layer) -> bool:
    """Whether `layer` is a functional model (keras-hub backbones are): one with a call graph.

    Keras exports no `Functional` class to test against; this checks for the
    graph attributes (`_operations`, `_nodes_by_depth`) that the other
    graph wrappers read.

    Args:
        layer: any Keras layer.

    Example:
    >>> inputs = keras.Input((3,))  # doctest: +SKIP
    >>> is_functional_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)))  # doctest: +SKIP
    True
    """
    check_versions("keras")
    import keras

    return isinstance(layer, keras.Model) and hasattr(layer, "_operations") and hasattr(layer, "_nodes_by_depth")


def graph_call_count(layer) -> int:
    """How many times `layer` is called in functional graphs (its `_inbound_nodes`).

    Keras has no public view of a functional model's graph.

    Example:
    >>> graph_call_count(model.get_layer("fusion"))  # doctest: +SKIP
    1
    """
    check_versions("keras")
    return len(layer._inbound_nodes)


def graph_consumer_count(layer) -> int:
    """How many graph calls take an output of `layer` (its `_outbound_nodes`).

    Example:
    >>> graph_consumer_count(model.get_layer("conv"))  # doctest: +SKIP
    1
    """
    check_versions("keras")
    return len(layer._outbound_nodes)


def graph_consumers(layer) -> list:
    """The layers whose graph calls take an output of `layer` (its `_outbound_nodes`' operations).

    Example:
    >>> [consumer.name for consumer in graph_consumers(model.get_layer("norm"))]  # doctest: +SKIP
    ['relu']
    """
    check_versions("keras")
    return [node.operation for node in layer._outbound_nodes]


def graph_producers(layer) -> list:
    """The layers whose outputs are the inputs of `layer`'s first graph call.

    Reads `_inbound_nodes[0].parent_nodes` and each node's `operation`.

    Example:
    >>> [producer.name for producer in graph_producers(model.get_layer("norm"))]  # doctest: +SKIP
    ['conv']
    """
    check_versions("keras")
    return [node.operation for node in layer._inbound_nodes[0].parent_nodes]


def graph_call_arguments(layer) -> tuple:
    """The positional arguments (symbolic tensors) of `layer`'s first graph call.

    Reads `_inbound_nodes[0].arguments.args`: the only way to get the tensors
    a layer was called with back from a built functional model.

    Example:
    >>> text_tokens, image_tokens, *masks = graph_call_arguments(model.get_layer("fusion"))  # doctest: +SKIP
    """
    check_versions("keras")
    return tuple(layer._inbound_nodes[0].arguments.args)


def graph_nodes(model) -> list:
    """A functional model's layer calls (graph nodes, input nodes left out), in an order that runs them.

    Reads `_nodes_by_depth` (deepest first, as `Function._run_through_graph`
    runs them): the graph's calls, which no public API lists.

    Example:
    >>> [node.operation.name for node in graph_nodes(backbone)][:2]  # doctest: +SKIP
    ['stem_conv_pad', 'stem_conv']
    """
    check_versions("keras")
    by_depth = model._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth] if not node.is_input]


def run_graph_nodes(nodes, tensors: dict, training, *, symbolic: bool = False) -> dict:
    """Run graph `nodes` (from `graph_nodes`) on `tensors` (`id(symbolic tensor)` -> value), adding their outputs.

    Reads each node's `arguments.fill_in`, `outputs` and its operation's
    `_call_context_args`, and passes `training` as `Functional.call` does: a
    part of a functional model runs without cloning its graph, which
    `keras.Model(intermediate, intermediate)` does, adding a call to every
    layer in it. `symbolic`: `tensors` are `keras.KerasTensor`s and each
    operation gives its `compute_output_spec` (adding no call to the graph).

    Example:
    >>> tensors = run_graph_nodes(graph_nodes(backbone)[:3], {id(backbone.inputs[0]): images}, True)  # doctest: +SKIP
    """
    check_versions("keras")
    import keras

    for node in nodes:
        args, kwargs = node.arguments.fill_in(tensors)
        if training is not None and "training" in getattr(node.operation, "_call_context_args", {}):
            kwargs["training"] = training
        run = node.operation.compute_output_spec if symbolic else node.operation
        outputs = keras.tree.flatten(run(*args, **kwargs))
        tensors.update({id(graph_tensor): value for graph_tensor, value in zip(node.outputs, outputs)})
    return tensors


@contextlib.contextmanager
def keras_histories_kept(tensors):
    """Give `tensors` their graph history (`_keras_history`) back when the block ends.

    Building a model from intermediate tensors re-links a model's own
    `keras.Input` tensors to new graph nodes (Keras 3.15), after which the
    model's `get_config()` fails ("could not find node key"); no public API
    restores them.

    Args:
        tensors: symbolic tensors, e.g. `model.inputs`.

    Example:
    >>> with keras_histories_kept(model.inputs):  # doctest: +SKIP
    ...     head = keras.Model(head_inputs, model.output)
    """
    check_versions("keras")
    histories = [(tensor, tensor._keras_history) for tensor in tensors]
    try:
        yield
    finally:
        for tensor, history in histories:
            tensor._keras_history = history


@contextlib.contextmanager
def unlocked_tracker(layer):
    """Let a built `layer` take new variables and sub-layers inside the block.

    A built Keras layer locks its state tracker (`_tracker`); Keras' own
    `Layer.quantize` unlocks it the same way to add its scales, and no public
    API does.

    Args:
        layer: a built Keras layer.

    Example:
    >>> with unlocked_tracker(dense):  # doctest: +SKIP
    ...     dense.scale = dense.add_weight(shape=(), name="scale")
    """
    check_versions("keras")
    layer._tracker.unlock()
    try:
        yield
    finally:
        layer._tracker.lock()


def optimizer_variable_key(optimizer, variable):
    """The key a Keras optimizer identifies `variable` by (`Optimizer._var_key`).

    `update_step` receives one replica's copy of a variable under
    tf.distribute; the key maps it to the same identity as the variable
    itself, which `id()` does not.

    Args:
        optimizer: a Keras optimizer.
        variable: a Keras variable, or a replica's copy of one.

    Example:
    >>> optimizer_variable_key(optimizer, model.trainable_variables[0])  # doctest: +SKIP
    """
    check_versions("keras")
    return optimizer._var_key(variable)


@dataclasses.dataclass(frozen=True)
class AttentionInternals:
    """What `MultiHeadAttention._compute_attention` computes with, set when the layer is built.

    Args:
        dot_product_equation: einsum of keys and queries into scores.
        combine_equation: einsum of probabilities and values into the context.
        masked_softmax: `(scores, attention_mask) -> probabilities`.
        dropout_layer: the Dropout on the probabilities.
    """

    dot_product_equation: str
    combine_equation: str
    masked_softmax: Callable
    dropout_layer: object


def attention_internals(layer) -> AttentionInternals:
    """The built attention step of a `keras.layers.MultiHeadAttention`.

    Keras documents `_compute_attention` as the method to override for a
    custom attention computation, but the equations, the masked softmax and
    the dropout it needs are private attributes.

    Args:
        layer: a built MultiHeadAttention.

    Example:
    >>> attention_internals(attention).dot_product_equation  # doctest: +SKIP
    'aecd,abcd->acbe'
    """
    check_versions("keras")
    return AttentionInternals(
        dot_product_equation=layer._dot_product_equation,
        combine_equation=layer._combine_equation,
        masked_softmax=layer._masked_softmax,
        dropout_layer=layer._dropout_layer,
    )


@contextlib.contextmanager
def take_without_index_wrap():
    """While inside, `keras.ops.take` on dense indices (embedding lookups included) is one `tf.gather`.

    Keras' TensorFlow `take` wraps negative indices first (`where(i < 0, i +
    size, i)`): integer arithmetic on the model's int32 inputs, which TFLite's
    int16x8 calibrator cannot take (`export/int16x8_graph.py`). mmkeras' ids
    and masks are never negative, so the gather alone is the same lookup.
    The backend function is private; it is swapped back on exit.

    Example:
    >>> with take_without_index_wrap():  # doctest: +SKIP
    ...     archive.write_out(saved_model_dir)
    """
    check_versions("keras")
    import tensorflow as tf

    numpy_backend = importlib.import_module("keras.src.backend.tensorflow.numpy")
    keras_take = numpy_backend.take

    def gather(x, indices, axis=None):
        if axis is None or isinstance(indices, (tf.SparseTensor, tf.RaggedTensor)):
            return keras_take(x, indices, axis=axis)
        return tf.gather(numpy_backend.convert_to_tensor(x), numpy_backend.convert_to_tensor(indices), axis=axis)

    numpy_backend.take = gather
    try:
        yield
    finally:
        numpy_backend.take = keras_take


def mobilenet_module():
    """keras-hub's MobileNet module, whose blocks keras-hub does not export.

    The QAT transform needs the block classes (InvertedResidualBlock,
    ConvBnActBlock, ...) to find their convolution / BatchNorm pairs.

    Example:
    >>> mobilenet_module().InvertedResidualBlock.__name__  # doctest: +SKIP
    'InvertedResidualBlock'
    """
    check_versions("keras-hub")
    return importlib.import_module("keras_hub.src.models.mobilenet.mobilenet_backbone")


def vit_layers_module():
    """keras-hub's ViT layers module, whose blocks keras-hub does not export.

    Example:
    >>> vit_layers_module().ViTEncoderBlock.__name__  # doctest: +SKIP
    'ViTEncoderBlock'
    """
    check_versions("keras-hub")
    return importlib.import_module("keras_hub.src.models.vit.vit_layers")


def litert_ops_details(interpreter) -> list[dict]:
    """Every op of a LiteRT interpreter's main graph: `op_name`, `operand_types`, `result_types`, ...

    Wraps `Interpreter._get_ops_details()`: the public interpreter API lists
    tensors and signatures, not ops. Needs no allocated tensors, so it works
    for models with ops the runtime cannot run. Imports no TensorFlow.

    Args:
        interpreter: an `Interpreter` from ai_edge_litert, tflite_runtime or
            tf.lite.

    Example:
    >>> [details["op_name"] for details in litert_ops_details(interpreter)][:1]  # doctest: +SKIP
    ['FULLY_CONNECTED']
    """
    package = type(interpreter).__module__.split(".")[0]
    check_versions(INTERPRETER_DISTRIBUTIONS.get(package, package))
    return interpreter._get_ops_details()


# Functions registered under a fixed token (the registry holds them weakly; this keeps them alive).
_FIXED_PY_FUNCTIONS: dict[str, Callable] = {}


def register_py_function(token: str, function: Callable):
    """Make `function` what `tf.raw_ops.PyFuncStateless(token=token, ...)` calls in this process.

    `tf.numpy_function` registers its function under a token numbered in the
    process that builds the graph ("pyfunc_0"), so a tf.data service worker in
    another process cannot run it ("Could not find callback with key=pyfunc_0").
    A fixed token registered in both processes can be run by either. Private:
    TensorFlow's `script_ops._py_funcs` registry.

    Example:
    >>> import numpy as np                                                          # doctest: +SKIP
    >>> register_py_function("double", lambda x: x * 2)                             # doctest: +SKIP
    >>> tf.raw_ops.PyFuncStateless(input=[np.int64(2)], token="double", Tout=[tf.int64])  # doctest: +SKIP
    """
    check_versions("tensorflow")
    from tensorflow.python.ops import script_ops

    _FIXED_PY_FUNCTIONS[token] = function
    script_ops._py_funcs._funcs[token] = function
