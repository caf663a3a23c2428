"""effnet.models.InferenceFunction: the serving forward pass with the weights frozen into the graph."""

import numpy as np
import pytest
import tensorflow as tf
from modeltest_utils import images, randomize

from effnet.models import InferenceFunction
from effnet.plugins.models import efficientnet

KNOBS = {"num_classes": 7, "width": 0.25, "depth": 0.1, "dropout_rate": 0.0, "drop_path_rate": 0.0}


def model_for(policy, seed=3, **knobs):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    return randomize(efficientnet("efficientnet_v2_s", **{**KNOBS, **knobs}), seed=seed)


@pytest.mark.parametrize("policy, tol", [("float32", 1e-6), ("mixed_bfloat16", 0.05)])
def test_frozen_forward_equals_the_live_model(policy, tol):
    model = model_for(policy)
    x = tf.constant(images(batch=3, size=64).astype("uint8"))
    expected = model(x, training=False).numpy()
    frozen = InferenceFunction(model)
    got = frozen(x).numpy()
    assert got.dtype == np.float32 and got.shape == (3, 7)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * float(np.abs(expected).max()))
    # the batch dimension is free: one trace serves batch 1 as well
    np.testing.assert_allclose(frozen(x[:1]).numpy(), got[:1], rtol=tol, atol=tol * float(np.abs(expected).max()))
    assert len(frozen.graphs) == 1


def test_the_frozen_graph_reads_no_variables_and_holds_the_weights_taken_at_first_call():
    model = model_for("mixed_bfloat16")
    frozen = InferenceFunction(model, tf.nn.softmax)
    live = InferenceFunction(model, tf.nn.softmax, freeze=False)
    x = tf.constant(images(batch=2, size=64))
    before = frozen(x).numpy()
    np.testing.assert_allclose(before.sum(axis=-1), 1.0, rtol=1e-5)  # the output function is applied
    (graph,) = frozen.graphs.values()
    ops = {node.op for node in graph.graph.as_graph_def().node}
    assert not ops & {"ReadVariableOp", "VarHandleOp", "ResourceGather"}, ops
    assert "Const" in ops
    # later weight changes reach the live function only (build the frozen one after loading weights)
    head = model.layers[-1]
    head.bias.assign(head.bias + 5.0 * np.eye(7, dtype="float32")[0])
    np.testing.assert_array_equal(frozen(x).numpy(), before)
    assert (live(x).numpy()[:, 0] > before[:, 0]).all()
    # another image size or dtype is another trace, taken from the weights as they are then
    assert (frozen(tf.cast(x, tf.uint8)).numpy()[:, 0] > before[:, 0]).all()
    assert len(frozen.graphs) == 2


def test_frozen_forward_under_xla():
    model = model_for("float32")
    x = tf.constant(images(batch=2, size=64))
    expected = model(x, training=False).numpy()
    got = InferenceFunction(model, jit_compile=True)(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_a_frozen_evaluator_matches_the_live_one_and_follows_weights_after_refresh():
    from effnet.metrics import Evaluator

    model = model_for("float32")
    data = tf.data.Dataset.from_tensor_slices({"image": images(batch=6, size=64).astype("uint8"),
                                               "label": np.arange(6) % 7}).batch(4)
    live, frozen = Evaluator(model), Evaluator(model, freeze=True)
    frozen.warm_up((64, 64, 3), [4, 2])
    a, b = live(data), frozen(data)
    assert (a.count, a.top1) == (b.count, b.top1) and b.loss == pytest.approx(a.loss, rel=1e-6)
    head = model.layers[-1]
    head.bias.assign(head.bias + 50.0 * np.eye(7, dtype="float32")[1])  # every image now says class 1
    assert frozen(data).loss == pytest.approx(a.loss, rel=1e-6)  # still the weights it froze
    frozen.refresh()
    moved = frozen(data)
    assert moved.loss == pytest.approx(live(data).loss, rel=1e-6) and moved.top1 == pytest.approx(1 / 6)


def _optimized(concrete):
    """The GraphDef grappler makes of a ConcreteFunction's graph (default options), as TF runs it."""
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer

    with tf.Graph().as_default():
        meta = tf.compat.v1.train.export_meta_graph(graph_def=concrete.graph.as_graph_def())
    fetch = meta_graph_pb2.CollectionDef()
    fetch.node_list.value.extend(output.name for output in concrete.outputs)
    meta.collection_def["train_op"].CopyFrom(fetch)
    return tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)


def test_every_convolution_of_the_frozen_bf16_graph_reads_a_constant_filter():
    """oneDNN keeps a convolution's reordered filter between calls only when the filter is a graph
    constant (batch-1 V2-S convolutions 19.7 -> 14.5 ms). The BN-folded kernels must therefore fold
    to constants: computed from the float32 weights (a bfloat16 -> float32 cast of a large kernel is
    one grappler leaves unfolded). Width 0.5 gives kernels of up to 98k weights, large enough to
    catch that."""
    model = model_for("mixed_bfloat16", width=0.5)
    frozen = InferenceFunction(model)
    frozen(tf.constant(images(batch=1, size=64).astype("uint8")))
    (concrete,) = frozen.graphs.values()
    graph = _optimized(concrete)
    nodes = {node.name: node for node in graph.node}
    convolutions = [node for node in graph.node if node.op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative")]
    assert len(convolutions) >= 20
    filters = {node.name: nodes[node.input[1].split(":")[0]] for node in convolutions}
    assert {name: f.op for name, f in filters.items() if f.op != "Const"} == {}
    assert {f.attr["dtype"].type for f in filters.values()} == {tf.bfloat16.as_datatype_enum}
