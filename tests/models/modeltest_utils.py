"""Helpers for the model tests: weight randomisation, images, graph nodes, a traced training step (imported by name: tests have no packages)."""

import numpy as np

TINY = {"width": 0.25, "depth": 0.1}  # every stage keeps one block, channels >= 8


def images(batch=2, size=32, seed=0, width=None):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, width or size, 3)).astype("float32")


def randomize(model, seed=0):
    """Give BatchNorm statistics and biases non-trivial values (weights=None leaves them 0/1),
    mildly enough that logits stay O(1-100) through 40+ blocks."""
    import keras

    from effnet.plugins.models.builder import weighted_layers

    rng = np.random.default_rng(seed)
    for layer in weighted_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.4, 0.8, gamma.shape), rng.normal(0, 0.1, beta.shape),
                rng.normal(0, 0.1, mean.shape), rng.uniform(1.0, 2.0, var.shape),
            ])
        elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])
    return model


def graph_nodes(graph_def):
    """Every NodeDef of a GraphDef: its own and those of the functions in its library."""
    return list(graph_def.node) + [node for function in graph_def.library.function for node in function.node_def]


def training_step_nodes(block, input_spec):
    """Every NodeDef of one traced training step of ``block``: the forward pass and the gradients of its input and weights."""
    import tensorflow as tf

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = block(x, training=True)
        return tape.gradient(y, [x, *block.trainable_variables])

    return graph_nodes(step.get_concrete_function(input_spec).graph.as_graph_def())
