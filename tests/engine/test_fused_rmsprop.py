"""The built-in `rmsprop`: Keras' RMSprop, each variable updated by TF's one-pass kernel."""

import numpy as np
import pytest


def _compiled_apply(opt, variables):
    import tensorflow as tf

    @tf.function
    def apply(gs):
        opt.apply_gradients(zip(gs, variables))

    return apply


@pytest.mark.parametrize("momentum, centered", [(0.9, False), (0.0, False), (0.9, True)])
def test_same_updates_slots_and_checkpoint_layout_as_keras_rmsprop(momentum, centered, tmp_path):
    import keras
    import tensorflow as tf

    from effnet.plugins.optimizers import rmsprop

    rng = np.random.default_rng(0)
    init = [rng.normal(0, 1, s).astype("float32") for s in ((3, 3, 4, 8), (8,), (5,))]
    grads = [[tf.constant(rng.normal(0, 1, w.shape).astype("float32")) for w in init] for _ in range(6)]
    results = []
    for make in (lambda: keras.optimizers.RMSprop(0.01, rho=0.9, momentum=momentum, epsilon=1e-3, centered=centered),
                 lambda: rmsprop(0.01, momentum=momentum, centered=centered)):
        variables = [keras.Variable(w) for w in init]
        opt = make()
        opt.build(variables)
        apply = _compiled_apply(opt, variables)
        for gs in grads:
            apply(gs)
        results.append((opt, variables))
    (ref, ref_vars), (ours, our_vars) = results
    assert type(ours).__name__ == "FusedRMSprop" and isinstance(ours, keras.optimizers.RMSprop)
    for a, b in zip(our_vars, ref_vars):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(ours.variables, ref.variables):  # the same slots in the same order
        np.testing.assert_allclose(np.asarray(a.numpy()), np.asarray(b.numpy()), rtol=1e-5, atol=1e-6)
    # checkpoints cross over both ways (runs written with Keras' RMSprop resume, and back)
    for writer, make_reader, name in ((ref, lambda: rmsprop(0.01, momentum=momentum, centered=centered), "old"),
                                      (ours, lambda: keras.optimizers.RMSprop(0.01, momentum=momentum, centered=centered), "new")):
        tf.train.Checkpoint(optimizer=writer).write(str(tmp_path / name))
        reader = make_reader()
        reader.build([keras.Variable(w) for w in init])
        tf.train.Checkpoint(optimizer=reader).read(str(tmp_path / name)).assert_existing_objects_matched()
        for a, b in zip(reader.variables, writer.variables):
            np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))


def test_fused_false_is_keras_rmsprop_and_a_non_boolean_is_refused():
    import keras

    from effnet.errors import UserError
    from effnet.plugins.optimizers import rmsprop

    assert type(rmsprop(0.01, fused=False)) is keras.optimizers.RMSprop
    with pytest.raises(UserError, match=r"^rmsprop.fused='no' must be True or False\n"):
        rmsprop(0.01, fused="no")
