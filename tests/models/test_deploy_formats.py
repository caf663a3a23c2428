"""ONNX (tf2onnx -> ONNX Runtime), OpenVINO IR (OpenVINO runtime), full-integer TFLite and int8 OpenVINO IR (NNCF) round trips of a
V1 and a V2 built-in architecture (tiny widths, 32 px, random weights), each held to the export's default
parity bounds in its own runtime, and the graph each converter wrote checked for what it must contain."""

import numpy as np
import pytest
from modeltest_utils import randomize

from tests.extras import requires_module

from effnet.plugins.models import efficientnet

pytestmark = [requires_module("onnxruntime", "onnx"), requires_module("tf2onnx", "onnx"),
              requires_module("openvino", "openvino"), requires_module("nncf", "openvino-int8")]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_s"])
def test_converted_formats_round_trip(name, tmp_path):
    import json

    import onnx

    from effnet.exporter import Exporter, decode_all, synthetic_samples
    from effnet.runtimes import load

    model = randomize(efficientnet(name, num_classes=5, width=0.25, depth=0.1, dropout_rate=0.0, drop_path_rate=0.0),
                      seed=1)
    exporter = Exporter(model, 32)
    samples = synthetic_samples(8, 32, seed=5)
    calibration, kept = decode_all(exporter, synthetic_samples(24, 32, seed=9))
    assert len(kept) == 24
    formats = ["onnx", "openvino", "tflite_int8", "openvino_int8"]
    results = exporter.export(tmp_path, formats, samples, calibration=calibration)
    assert [r.format for r in results] == formats and all(r.passed for r in results), [r.line() for r in results]
    assert [r.max_prob_diff < 1e-5 for r in results[:2]] == [True, True], [r.line() for r in results]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model_int8.tflite", "openvino", "openvino_int8"]

    images = exporter.decode_samples(samples).astype(np.float32)
    ref = exporter.reference(images)
    # ONNX: a real ONNX graph (checked by onnx), batch free, the weights inside as initializers
    graph = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(graph)
    ops = {node.op_type for node in graph.graph.node}
    assert {"Conv", "Sigmoid", "Softmax"} <= ops and not ops & {"TFL_VAR_HANDLE"}, ops
    onnx_model = load(tmp_path / "model.onnx")
    assert onnx_model.runtime == "onnxruntime" and onnx_model.image_size == 32
    np.testing.assert_allclose(onnx_model(images[:3]), ref[:3], atol=1e-5)  # another batch size than the check's
    # OpenVINO: IR pair, fp32 weights (not compressed to fp16)
    ir = tmp_path / "openvino"
    assert sorted(p.name for p in ir.iterdir()) == ["model.bin", "model.xml"]
    assert 'element_type="f16"' not in (ir / "model.xml").read_text()
    vino = load(ir)
    assert vino.runtime == "openvino" and "float32" in vino.detail
    np.testing.assert_allclose(vino(images), ref, atol=1e-5)
    # full-integer TFLite: every convolution runs on int8 tensors, float only at the I/O boundary
    int8 = load(tmp_path / "model_int8.tflite")
    interpreter = int8.predict.interpreter
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs and all(details[op["inputs"][0]]["dtype"] == np.int8 for op in convs)
    assert {op["op_name"] for op in interpreter._get_ops_details()} >= {"QUANTIZE", "DEQUANTIZE"}
    out = int8(images)
    assert out.shape == ref.shape and np.isfinite(out).all()
    # int8 OpenVINO IR: NNCF's quantize/dequantize pairs in the IR, and the CPU plugin runs the convolutions in int8
    import openvino as ov

    assert "FakeQuantize" in (tmp_path / "openvino_int8" / "model.xml").read_text()
    compiled = ov.Core().compile_model(str(tmp_path / "openvino_int8" / "model.xml"), "CPU")
    convs = [op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
             if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert convs and sum(p in ("i8", "u8") for p in convs) >= len(convs) // 2, convs
    vino8 = load(tmp_path / "openvino_int8")
    assert np.abs(vino8(images) - ref).max() < 0.3 and (vino8(images).argmax(1) == ref.argmax(1)).mean() >= 0.5
    json.dumps([r.as_dict() for r in results])  # the report's rows serialise
