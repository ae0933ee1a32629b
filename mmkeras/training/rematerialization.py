"""`rematerialized`: a backbone's forward pass recomputed in segments on the backward pass (gradient checkpointing).

Fine-tuning a vision backbone keeps every layer's output for the backward
pass (EfficientNet-Lite0 at 224: about 80 MB an image). Cut into segments at
points of its graph that one tensor alone crosses, each segment run under
`keras.remat` keeps only its input; the backward pass recomputes one segment
at a time. Keras' own `RematScope` wraps single layers, each keeping its
input: that saves nothing on a chain of layers (docs/design.md#gradient-checkpointing).

The change lives only while the training step is traced: the model, its
saved weights and configuration, and an export are untouched.

Example:
>>> with rematerialized(model, "vision_backbone"):        # doctest: +SKIP
...     logits = model(inputs, training=True)
"""

import contextlib
import dataclasses
import math

import keras

from mmkeras import compat
from mmkeras.errors import UserError


@dataclasses.dataclass
class Segment:
    """Consecutive layer calls of a functional model that only `start` enters and only `end` leaves.

    Args:
        start: the symbolic tensor the segment takes.
        nodes: its graph nodes, in an order that runs them.
        end: the symbolic tensor it gives.
    """

    start: object
    nodes: list
    end: object

    def __call__(self, inputs, training=None):
        return compat.run_graph_nodes(self.nodes, {id(self.start): inputs}, training)[id(self.end)]


@contextlib.contextmanager
def rematerialized(model: keras.Model, layer_name: str):
    """Calls of `model`'s layer `layer_name` within the block run as rematerialized segments.

    Args:
        model: the model whose layer to rematerialize.
        layer_name: a functional sub-model of `model` (a backbone).

    Raises:
        UserError: the layer's graph has no points to cut it at.
    """
    backbone = model.get_layer(layer_name)

    def call(inputs, training=None, mask=None, **unused):
        outputs = inputs
        for part in backbone_segments(backbone, image_shape=tuple(inputs.shape[1:])):
            outputs = _recomputed(part, training)(outputs)
        return outputs

    # An instance attribute over the class's method; removed (not restored) at the end, so replicas
    # tracing one after another under a tf.distribute strategy all leave the class's method in place.
    backbone.call = call
    try:
        yield
    finally:
        vars(backbone).pop("call", None)


def backbone_segments(backbone: keras.Model, image_shape=None) -> list[Segment]:
    """`backbone`'s layer calls as consecutive `Segment`s whose chain computes what it does.

    Args:
        backbone: a functional model with one input and one output.
        image_shape: the shape of one input example, where the backbone's
            own input leaves sizes open (`(None, None, 3)`); it sizes the
            segments.

    Raises:
        UserError: `backbone` is not such a model, or has no cut point.
    """
    name = backbone.name
    if not compat.is_functional_model(backbone) or len(backbone.inputs) != 1 or len(backbone.outputs) != 1:
        raise UserError(f"remat: {name} is not a functional model with one input and one output")
    nodes = compat.graph_nodes(backbone)
    sizes = _output_sizes(backbone, nodes, image_shape)
    cuts = _cheapest_cuts(_cut_points(nodes), sizes)
    if not cuts:
        raise UserError(f"remat: {name}'s graph has no point that one tensor alone crosses; nothing to cut")
    bounds = [-1, *cuts, len(nodes) - 1]
    tensors = [backbone.inputs[0], *(nodes[index].outputs[0] for index in cuts), backbone.outputs[0]]
    return [
        Segment(tensors[i], nodes[first + 1 : last + 1], tensors[i + 1])
        for i, (first, last) in enumerate(zip(bounds, bounds[1:]))
    ]


def _cut_points(nodes) -> list[int]:
    """Indices of the nodes after which only that node's single output is still needed."""
    last_use = {}
    for index, node in enumerate(nodes):
        for tensor in node.input_tensors:
            last_use[id(tensor)] = index
    open_tensors: set[int] = set()
    cuts = []
    for index, node in enumerate(nodes[:-1]):
        open_tensors = {tensor for tensor in open_tensors if last_use[tensor] > index}
        outputs = {id(tensor) for tensor in node.outputs if last_use.get(id(tensor), -1) > index}
        open_tensors |= outputs
        if len(node.outputs) == 1 and open_tensors == {id(node.outputs[0])}:
            cuts.append(index)
    return cuts


def _cheapest_cuts(cuts: list[int], sizes: list[int]) -> list[int]:
    """The cut points that keep the least at the backward pass's peak.

    The backward pass keeps every segment's input (the boundaries) and, at
    once, the outputs of the one segment it recomputes: the peak is about the
    boundaries' sizes plus the largest segment's. For each budget of segment
    size, cuts are placed greedily (at the last cut point before a segment
    would exceed it); the budget of the smallest peak wins.
    """
    total = sum(sizes)
    budgets = {round(max(sizes) * (total / max(sizes)) ** (step / 64)) for step in range(65)}
    best, best_peak = [], total
    for budget in sorted(budgets):
        chosen = _greedy_cuts(set(cuts), sizes, budget)
        segment_sums = [sum(sizes[start + 1 : end + 1]) for start, end in zip([-1, *chosen], [*chosen, len(sizes) - 1])]
        peak = sum(sizes[cut] for cut in chosen) + max(segment_sums)
        if peak < best_peak:
            best, best_peak = chosen, peak
    return best


def _greedy_cuts(cuts: set[int], sizes: list[int], budget: int) -> list[int]:
    chosen: list[int] = []
    running, last_cut = 0, None
    for index, size in enumerate(sizes):
        if running + size > budget and last_cut is not None:
            chosen.append(last_cut)
            running = sum(sizes[last_cut + 1 : index])
            last_cut = None
        running += size
        if index in cuts and index < len(sizes) - 1:
            last_cut = index
    return chosen


def _output_sizes(backbone, nodes, image_shape) -> list[int]:
    """Values per example in each graph node's outputs, given one example of `image_shape`."""
    example = backbone.inputs[0]
    if image_shape is not None:
        example = keras.KerasTensor((1, *image_shape), dtype=example.dtype)
    specs = compat.run_graph_nodes(nodes, {id(backbone.inputs[0]): example}, None, symbolic=True)
    return [
        sum(math.prod(dim or 1 for dim in specs[id(tensor)].shape[1:]) for tensor in node.outputs) for node in nodes
    ]


def _recomputed(part: Segment, training):
    """`part(x, training)` under `keras.remat`; its recomputation sees and leaves the state the forward pass saw.

    The forward pass updates non-trainable variables: batch normalization's
    moving statistics, QAT's activation ranges, dropout's seed. Recomputed
    after it, the segment would read the updated values (another dropout
    mask, other ranges: other gradients) and update them a second time, so
    the recomputation runs in a `StatelessScope` that maps each of them to
    its value before the forward pass and keeps its assignments out of them.
    """
    before = None

    def forward(inputs):
        nonlocal before
        if before is None:
            before = [(variable, keras.ops.copy(variable.value)) for variable in _state_of(part)]
            return part(inputs, training)
        with keras.StatelessScope(state_mapping=before):
            return part(inputs, training)

    return keras.remat(forward)


def _state_of(part: Segment) -> list:
    """The non-trainable variables of a segment's layers (each once)."""
    variables = {}
    for node in part.nodes:
        for variable in getattr(node.operation, "non_trainable_variables", ()):
            variables.setdefault(id(variable), variable)
    return list(variables.values())
