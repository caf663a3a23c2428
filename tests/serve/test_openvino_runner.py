"""effnet.runtimes.OpenVINORunner on small real OpenVINO models: batches split across the CPU plugin's
throughput streams and single images on a latency copy with batch 1 give the plain compiled model's
results; an IR with a fixed batch keeps it; an unreadable IR is one line."""

import numpy as np
import pytest

from tests.extras import requires_module

pytestmark = [requires_module("openvino", "openvino")]


def _write_ir(path, batch=-1, size=8, channels=3, classes=5, seed=0):
    """A tiny classifier as an OpenVINO IR: NHWC float input -> transpose -> conv -> swish -> mean -> matmul -> softmax."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(seed)
    images = ops.parameter([batch, size, size, channels], np.float32, name="images")
    x = ops.transpose(images, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    x = ops.convolution(x, ops.constant(rng.normal(size=(6, channels, 3, 3)).astype(np.float32) * 0.05), [1, 1],
                        [1, 1], [1, 1], [1, 1])
    x = ops.swish(x)
    x = ops.reduce_mean(x, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    x = ops.matmul(x, ops.constant(rng.normal(size=(6, classes)).astype(np.float32)), False, False)
    model = ov.Model([ops.softmax(x, 1)], [images], "tiny")
    path.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path / "model.xml"), compress_to_fp16=False)
    return path


def _plain(path, images):
    import openvino as ov

    compiled = ov.Core().compile_model(str(path / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.array(compiled.create_infer_request().infer({0: images})[0])


def test_batches_split_across_streams_give_the_plain_models_results(tmp_path):
    from effnet import runtimes

    path = _write_ir(tmp_path / "ir")
    loaded = runtimes.load(path, threads=2)
    runner = loaded.predict
    assert isinstance(runner, runtimes.OpenVINORunner) and loaded.image_size == 8
    assert loaded.detail == "inference precision <Type: 'float32'>"
    wanted = runner._batches.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    assert len(runner._queue) == max(1, int(wanted))  # as many requests in flight as the plugin asks for
    images = np.random.default_rng(1).uniform(0, 255, (16, 8, 8, 3)).astype(np.float32)
    reference = _plain(path, images)
    for n in (16, 5, 2, 1):  # even and uneven splits, and the single-image copy
        got = loaded(images[:n])
        assert got.shape == (n, 5)
        np.testing.assert_allclose(got, reference[:n], rtol=1e-5, atol=1e-6)
    again = loaded(images[:5])  # the queue is reused: results land in their own slots, in order
    np.testing.assert_allclose(again, reference[:5], rtol=1e-5, atol=1e-6)


def test_a_single_image_runs_on_a_copy_compiled_for_batch_1(tmp_path):
    from effnet import runtimes

    path = _write_ir(tmp_path / "ir")
    runner = runtimes.load(path, threads=2).predict
    assert runner._single is None  # compiled on first use only
    image = np.full((1, 8, 8, 3), 100.0, np.float32)
    np.testing.assert_allclose(runner(image), _plain(path, image), rtol=1e-5, atol=1e-6)
    shape = runner._single.model_inputs[0].get_partial_shape()
    assert shape.is_static and list(shape.to_shape()) == [1, 8, 8, 3]
    assert runner._single.get_compiled_model().get_property("PERFORMANCE_HINT") == "LATENCY"
    assert runner._batches.get_property("PERFORMANCE_HINT") == "THROUGHPUT"


def test_an_ir_with_a_fixed_batch_keeps_it(tmp_path):
    from effnet import runtimes

    path = _write_ir(tmp_path / "ir", batch=4)
    runner = runtimes.load(path, threads=2).predict
    assert len(runner._queue) == 1  # never split: the IR takes exactly 4 images
    images = np.random.default_rng(2).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(runner(images), _plain(path, images), rtol=1e-5, atol=1e-6)


def test_bf16_is_the_plugins_choice_only_when_asked(tmp_path):
    import openvino as ov

    from effnet import runtimes

    path = _write_ir(tmp_path / "ir")
    plugin = ov.Core().compile_model(str(path / "model.xml"), "CPU").get_property("INFERENCE_PRECISION_HINT")
    assert "float32" in runtimes.load(path).detail  # eval, predict and the parity check measure the fp32 model
    assert runtimes.load(path, precision="auto").detail == f"inference precision {plugin}"


def test_an_unreadable_ir_is_one_line(tmp_path):
    from effnet import runtimes
    from effnet.errors import UserError

    path = _write_ir(tmp_path / "ir")
    (path / "model.xml").write_text("<net name='broken'")
    with pytest.raises(UserError) as err:
        runtimes.load(path)
    message = str(err.value)
    assert message.startswith(f"OpenVINO cannot load {path / 'model.xml'}: ") and "\n" not in message
