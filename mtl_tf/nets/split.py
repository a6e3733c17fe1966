"""Split an existing functional Keras model into a shared encoder and one head per output.

A user with a multi-output Keras model (built with `keras.Input`, functional or
Sequential) does not rewrite it as encoder + heads:

    encoder, heads = split_model(model, at="dense_1")
    mtm = MultiTaskModel(encoder, heads, losses={...}, balancer="mgda_ub")

`encoder` maps the model's inputs (same structure and names) to the output of
layer `at`; `heads[task]` maps that output to the model's output of `task`.
Both are functional `keras.Model`s over the model's own layer objects, so the
weights are shared, not copied: training either trains the original model, and
`mtm.predict(x)[task]` equals `model.predict(x)[task]` exactly.

The cut must separate the model: every path from the inputs to an output
passes through `at`'s output. A connection that bypasses it (a skip
connection from a layer before the cut into a head, or a model input read by a
head) is refused, naming the layer where it joins the head and the layer it
comes from.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

__all__ = ["split_model"]


def split_model(
    model: keras.Model, at: str, task_names: Sequence[str] | None = None
) -> tuple[keras.Model, dict[str, keras.Model]]:
    """Splits `model` at layer `at` into `(encoder, {task: head})`, sharing its weights.

    Args:
      model: a functional or built Sequential `keras.Model` (its graph is
        known). Its outputs become the tasks, in the model's output order.
      at: the name of a top-level layer of `model`, called once in it; its
        output is the shared representation z.
      task_names: one name per model output, in output order; default: the
        keys of a dict output, else the names of the layers that produce the
        outputs (a functional model's `output_names`; a Sequential's last layer).

    Returns:
      `(encoder, heads)`: `encoder` a `keras.Model` from the model's inputs to
      z, `heads` a dict task -> `keras.Model` from z to that output, ready for
      `MultiTaskModel(encoder, heads, ...)`.

    Raises:
      ValueError: `model` has no functional graph (a subclassed model, an
        unbuilt Sequential); no
        layer is named `at` (the message lists the names); `at` is called more
        than once; a connection bypasses the cut (naming the layer in the head
        that reads it and the layer it comes from); an output does not depend
        on `at`; `task_names` does not give one distinct name per output.
    """
    structure = _output_structure(model)
    outputs = list(structure.values()) if isinstance(structure, dict) else keras.tree.flatten(structure)
    layer = _layer_named(model, at)
    calls = [node for node in _graph_nodes(outputs) if node.operation is layer]
    if len(calls) != 1:
        raise ValueError(
            f"split_model: layer {at!r} of model {model.name!r} is called {len(calls)} times in the model, so its "
            "output is ambiguous; cut at a layer called exactly once"
        )
    cut = calls[0].outputs
    cut_ids = {id(t) for t in keras.tree.flatten(cut)}
    names = _task_names(model, structure, outputs, task_names)

    reaches = {}  # id(tensor) -> True: depends on the cut only; False: independent of the cut
    for name, output in zip(names, outputs):
        if not _from_cut(output, cut_ids, reaches, model, at, name):
            producer = _history(output)[0].name
            raise ValueError(
                f"split_model: output {name!r} of model {model.name!r} (from layer {producer!r}) does not depend on "
                f"layer {at!r}; cut at a layer before every output's branch"
            )

    # A Sequential's one input is a tensor, as the model takes it.
    inputs = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
    encoder = keras.Model(inputs, cut, name=f"{model.name}_encoder")
    heads = {name: _head(cut, output, cut_ids, f"{name}_head") for name, output in zip(names, outputs)}
    return encoder, heads


def _output_structure(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"split_model: expected a keras.Model; got {type(model).__name__}")
    try:
        # A Sequential keeps its graph in `outputs` only; a functional model's
        # `output` keeps the structure (a dict names the tasks).
        output = model.output if not isinstance(model, keras.Sequential) else model.outputs
        model_inputs = model.inputs
    except (AttributeError, ValueError):
        output, model_inputs = None, None
    if isinstance(model, keras.Sequential) and not model.built:
        raise ValueError(
            f"split_model: Sequential model {model.name!r} is not built, so it has no graph to cut; start it with a "
            "keras.Input(shape) layer, or call model.build(input_shape) (or the model on a batch) first"
        )
    if output is None or not model_inputs:
        raise ValueError(
            f"split_model: model {model.name!r} ({type(model).__name__}) has no functional graph; expected a model "
            "built from keras.Input (functional, or a Sequential with an Input). A subclassed model's graph is its "
            "Python code: give MultiTaskModel its encoder and heads directly"
        )
    return output


def _graph_nodes(outputs):
    """Every node on a path to `outputs` (each once)."""
    seen, nodes, stack = set(), [], list(outputs)
    while stack:
        _, node = _history(stack.pop())
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(node.input_tensors)
    return nodes


def _layer_named(model, at):
    names = [layer.name for layer in model.layers]
    if at not in names:
        raise ValueError(f"split_model: model {model.name!r} has no layer named {at!r}; its layers: {names}")
    return model.get_layer(at)


def _task_names(model, structure, outputs, task_names):
    if task_names is None:
        # Keras names a model output after the layer that produced it (a
        # Sequential has no `output_names`: its one output is its last layer's).
        if isinstance(structure, dict):
            names = list(structure)
        elif isinstance(model, keras.Sequential):
            names = [_history(o)[0].name for o in outputs]
        else:
            names = list(model.output_names)
    else:
        if isinstance(task_names, str):
            raise ValueError(f"split_model: task_names must be a list of names; got the string {task_names!r}")
        names = list(task_names)
    if len(names) != len(outputs):
        raise ValueError(
            f"split_model: task_names {names} give {len(names)} names for the {len(outputs)} outputs of model "
            f"{model.name!r}; expected one name per output, in output order"
        )
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"split_model: task_names must be distinct non-empty strings; got {names}")
    return names


def _history(tensor):
    """(layer, node) that produced a symbolic tensor of the graph."""
    operation, node_index, _ = tensor._keras_history
    return operation, operation._inbound_nodes[node_index]


def _from_cut(tensor, cut_ids, reaches, model, at, task):
    """True if `tensor` is computed from the cut only, False if from none of it; raises on a mix."""
    key = id(tensor)
    if key in cut_ids:
        return True
    if key in reaches:
        return reaches[key]
    layer, node = _history(tensor)
    inputs = list(node.input_tensors)
    if not inputs:  # a model input (or a layer without inputs)
        reaches[key] = False
        return False
    results = [_from_cut(t, cut_ids, reaches, model, at, task) for t in inputs]
    if all(results):
        reaches[key] = True
    elif not any(results):
        reaches[key] = False
    else:
        bypass = inputs[results.index(False)]
        source = _history(bypass)[0].name
        raise ValueError(
            f"split_model: layer {layer.name!r} in the head of output {task!r} of model {model.name!r} also reads the "
            f"output of {source!r}, which does not come from layer {at!r}: a connection bypasses the cut. Cut at a "
            f"layer after {source!r} (every head must read only {at!r}'s output), or make {source!r} part of the heads"
        )
    return reaches[key]


def _head(cut, output, cut_ids, name):
    if id(output) in cut_ids:
        # The output is the cut itself: the head is the identity.
        z = keras.Input(batch_shape=cut.shape, dtype=cut.dtype)
        return keras.Model(z, keras.layers.Identity()(z), name=name)
    return keras.Model(cut, output, name=name)
