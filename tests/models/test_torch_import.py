"""PyTorch weights (timm, efficientnet_pytorch) -> our models: parity with the real PyTorch code, and untrusted files.

Parity: each fixture in fixtures/torch/ was written by scripts/make_torch_fixtures.py from the real
timm / efficientnet_pytorch model with random weights (versions inside the fixture). The test
rebuilds the same weights from the fixture's seed, writes them as .safetensors (and .pth with
torch), imports them and compares our logits with PyTorch's on the same images after the same
preprocessing: max |difference| / max |logit| <= 1e-4 in float32, top-1 equal.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import torch_fixtures as fx
from effnet.errors import UserError
from effnet.plugins.models import efficientnet
from effnet.plugins.models.keras_import import import_keras_weights
from effnet.plugins.models.torch_import import TIMM_MODELS, timm_normalization
from tests.clitools import run_inprocess

# fixture -> what the user passes as --from (None: detected from the tensors)
FROM = {
    "timm_tf_efficientnet_b0": "timm:tf_efficientnet_b0",
    "timm_efficientnet_b0": "timm:efficientnet_b0",
    "timm_tf_efficientnetv2_s": "timm:tf_efficientnetv2_s",
    "timm_tf_efficientnetv2_b0": "timm:tf_efficientnetv2_b0",
    "timm_tf_efficientnet_lite0": "timm:tf_efficientnet_lite0",
    "timm_efficientnet_lite0": "timm:efficientnet_lite0",
    "effnet_pytorch_b0": None,
}
META = fx.load("_timm")


def _max_rel(ours, reference) -> float:
    reference = np.asarray(reference, np.float64)
    return float(np.max(np.abs(np.asarray(ours, np.float64) - reference)) / np.max(np.abs(reference)))


def _write(tmp_path, name, fixture, fmt):
    state = fx.state_dict(fixture)
    if fmt == "safetensors":
        return fx.write_safetensors(tmp_path / f"{name}.safetensors", state)
    torch = pytest.importorskip("torch", reason="the torch extra (make test installs it)")
    path = tmp_path / f"{name}.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
    return path


@pytest.mark.parametrize("name", list(FROM))
def test_logits_equal_pytorch(name, tmp_path):
    fixture = fx.load(name)
    assert fx.names() and set(FROM) == set(fx.names())
    fmt = "pth" if name == "effnet_pytorch_b0" else "safetensors"
    path = _write(tmp_path, name, fixture, fmt)
    model, report = import_keras_weights(path, source_name=FROM[name])
    assert report.normalization == fixture["normalization"]
    ours = np.asarray(model(fx.images(fixture), training=False))
    reference = np.asarray(fixture["logits"])
    print(f"{name}: {report}; max rel diff {_max_rel(ours, reference):.2e}")
    assert _max_rel(ours, reference) <= 1e-4
    assert (ours.argmax(1) == reference.argmax(1)).all()


def test_the_padding_matters(tmp_path):
    """timm's own efficientnet_b0 weights in a model that pads like TensorFlow give other logits:
    the parity above would fail if the import ignored the source's padding (or BN epsilon)."""
    fixture = fx.load("timm_efficientnet_b0")
    path = _write(tmp_path, "b0", fixture, "safetensors")
    wrong, _ = import_keras_weights(path, source_name="timm:tf_efficientnet_b0")
    assert _max_rel(wrong(fx.images(fixture), training=False), fixture["logits"]) > 1e-2


def test_the_cli_imports_a_pth_and_records_what_the_weights_need(tmp_path, capsys):
    pytest.importorskip("torch", reason="the torch extra (make test installs it)")
    fixture = fx.load("timm_tf_efficientnet_lite0")
    path = _write(tmp_path, "lite0", fixture, "pth")
    out = tmp_path / "lite0.weights.h5"
    result = run_inprocess(capsys, "import-weights", str(path), str(out), "--from", "timm:tf_efficientnet_lite0.in1k")
    assert result.code == 0, result.err
    assert "efficientnet.normalization = 'inception'" in result.out and "efficientnet.padding = 'same'" in result.out
    from effnet.plugins.models import weight_settings

    assert weight_settings(out) == {"efficientnet.normalization": "inception", "efficientnet.padding": "same", "efficientnet.bn_epsilon": 1e-3}
    # the written file loads into a model built with those settings and reproduces PyTorch's logits
    from effnet.plugins.models import load_pretrained

    model = efficientnet("efficientnet_lite0", num_classes=10, normalization="inception", bn_epsilon=1e-3)
    load_pretrained(model, out)
    assert _max_rel(model(fx.images(fixture), training=False), fixture["logits"]) <= 1e-4
    # a model built with another normalisation is refused, naming the binding
    other = efficientnet("efficientnet_lite0", num_classes=10)
    with pytest.raises(UserError, match="efficientnet.normalization = 'inception'"):
        load_pretrained(other, out)


def test_timm_weights_that_do_not_say_their_padding_are_refused(tmp_path, capsys):
    fixture = fx.load("timm_tf_efficientnet_b0")
    path = _write(tmp_path, "b0", fixture, "safetensors")
    out = tmp_path / "b0.weights.h5"
    result = run_inprocess(capsys, "import-weights", str(path), str(out))
    assert result.code == 2 and not out.exists()
    line = result.err.strip()
    assert "\n" not in line and "pass --from timm:tf_efficientnet_b0 or --from timm:efficientnet_b0" in line


def test_lite_counts_equal_timm():
    """Trainable parameters and BatchNorm statistics of timm's tf_efficientnet_lite0..4 (recorded by the generator)."""
    for variant, counts in META["lite_counts"].items():
        with keras.StatelessScope(initialize_variables=False):
            model = efficientnet(variant, num_classes=1000)
        trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
        assert (trainable, model.count_params() - trainable) == (counts["parameters"], counts["buffers"]), variant


def test_lite_follows_the_lite_rules():
    with keras.StatelessScope(initialize_variables=False):
        model = efficientnet("efficientnet_lite4", num_classes=1000)
    blocks = [layer for layer in model.layers if layer.name.startswith("block")]
    assert all(b.se_reduce is None and b.activation == "relu6" for b in blocks)
    assert model.get_layer("stem_conv").filters == 32 and model.get_layer("top_conv").filters == 1280  # not scaled by width 1.4
    stage_counts = [sum(1 for b in blocks if b.name.startswith(f"block{i}")) for i in range(1, 8)]
    assert stage_counts[0] == 1 and stage_counts[-1] == 1  # first and last stage not scaled by depth 1.8
    assert model.get_layer("top_dropout").rate == 0.3


def test_normalisation_table_agrees_with_timm():
    wanted = {"imagenet": [0.485, 0.456, 0.406], "inception": [0.5, 0.5, 0.5]}
    checked = 0
    for tagged, norm in META["pretrained_normalization"].items():
        name, _, tag = tagged.partition(".")
        if name not in TIMM_MODELS:
            continue
        assert wanted[timm_normalization(name, tag)] == norm["mean"], tagged
        assert wanted[timm_normalization(name, None)] == META["pretrained_normalization"][f"{name}.{META['default_tags'][name]}"]["mean"], name
        checked += 1
    assert checked > 50


# --------------------------------------------------------------------------------------------------
# Untrusted files


class _Armed:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _armed_files(tmp_path):
    marker = tmp_path / "code_ran"
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"conv_stem.weight": _Armed(marker)}, protocol=2))
    files = [legacy]
    try:
        import torch
    except ImportError:
        return marker, files
    zipped = tmp_path / "zipped.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "payload": _Armed(marker)}, zipped)
    return marker, files + [zipped]


def test_a_pickle_that_would_run_code_runs_nothing_and_is_refused(tmp_path, capsys):
    pytest.importorskip("torch", reason="the torch extra (make test installs it)")
    marker, files = _armed_files(tmp_path)
    # the files are armed: a plain unpickler runs the command
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.load(open({str(files[0])!r}, 'rb'))"], check=True)
    assert marker.exists()
    marker.unlink()
    for path in files:
        out = tmp_path / "out.weights.h5"
        result = run_inprocess(capsys, "import-weights", str(path), str(out))
        line = result.err.strip()
        print(line)
        assert result.code == 2 and "\n" not in line and not out.exists()
        assert "refused" in line and "system" in line and "nothing in it was run" in line
        assert not marker.exists()


def _b0_state(tmp_path):
    fixture = fx.load("effnet_pytorch_b0")
    return fx.state_dict(fixture)


@pytest.mark.parametrize("case", ["wrong_shape", "extra_tensor", "missing_tensor", "truncated_safetensors", "truncated_pth",
                                  "text_as_pth", "not_safetensors", "other_architecture", "wrong_from", "not_a_state_dict"])
def test_bad_files_are_one_line_exit_2_and_write_nothing(case, tmp_path, capsys):
    state = _b0_state(tmp_path)
    path = tmp_path / "w.safetensors"
    source_name = None
    expected = {
        "wrong_shape": "(source '_blocks.3._project_conv')", "extra_tensor": "'extra.weight'",
        "missing_tensor": "_blocks.2._bn1.running_var is missing", "truncated_safetensors": "truncated",
        "truncated_pth": "a truncated one", "text_as_pth": "not a PyTorch checkpoint",
        "not_safetensors": "not a", "other_architecture": "not an EfficientNet state dict",
        "wrong_from": "block", "not_a_state_dict": "not a state dict",
    }[case]
    if case == "wrong_shape":
        state["_blocks.3._project_conv.weight"] = state["_blocks.3._project_conv.weight"][:, :-8]
        fx.write_safetensors(path, state)
    elif case == "extra_tensor":
        state["extra.weight"] = np.zeros(3, np.float32)
        fx.write_safetensors(path, state)
    elif case == "missing_tensor":
        del state["_blocks.2._bn1.running_var"]
        fx.write_safetensors(path, state)
    elif case == "truncated_safetensors":
        fx.write_safetensors(path, state)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case in ("truncated_pth", "not_a_state_dict"):
        torch = pytest.importorskip("torch", reason="the torch extra (make test installs it)")
        path = tmp_path / "w.pth"
        if case == "truncated_pth":
            torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            torch.save([1, 2, 3], path)
    elif case == "text_as_pth":
        pytest.importorskip("torch", reason="the torch extra (make test installs it)")
        path = tmp_path / "w.pth"
        path.write_text("these are not weights\n")
    elif case == "not_safetensors":
        path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, say" * 10)
    elif case == "other_architecture":
        fx.write_safetensors(path, {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "fc.weight": np.zeros((10, 512), np.float32)})
    elif case == "wrong_from":
        fx.write_safetensors(path, state)
        source_name = "efficientnet_pytorch:efficientnet-b1"
    out = tmp_path / "out.weights.h5"
    args = ["import-weights", str(path), str(out)] + (["--from", source_name] if source_name else [])
    result = run_inprocess(capsys, *args)
    line = result.err.strip()
    print(line)
    assert result.code == 2 and not out.exists()
    assert len(line.splitlines()) == 1 and expected in line
    assert not list(tmp_path.glob(".out*"))  # no temporary file left either


def test_safetensors_needs_no_torch(tmp_path):
    """.safetensors files are parsed without PyTorch (checked in a fresh interpreter that cannot import it)."""
    fixture = fx.load("effnet_pytorch_b0")
    path = fx.write_safetensors(tmp_path / "b0.safetensors", fx.state_dict(fixture))
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from effnet.plugins.models.torch_import import read_state_dict\n"
        f"state, _ = read_state_dict({str(path)!r}); print(len(state))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == str(len(fixture["tensors"]))


def test_zip_checkpoint_wrapped_in_a_training_checkpoint(tmp_path):
    """timm's training checkpoints keep the weights under 'state_dict' / 'state_dict_ema': the EMA ones are taken."""
    torch = pytest.importorskip("torch", reason="the torch extra (make test installs it)")
    fixture = fx.load("effnet_pytorch_b0")
    state = {k: torch.from_numpy(v) for k, v in fx.state_dict(fixture).items()}
    path = tmp_path / "checkpoint.pth.tar"
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "state_dict": {k: v * 0 for k, v in state.items()}, "state_dict_ema": state}, path)
    assert zipfile.is_zipfile(path)
    model, report = import_keras_weights(path)
    assert "state_dict_ema" in str(report)
    assert _max_rel(model(fx.images(fixture), training=False), fixture["logits"]) <= 1e-4


# --------------------------------------------------------------------------------------------------
# Fine-tuning: --from-weights binds what the weights need, and the run keeps it for eval/predict/export


@pytest.mark.slow
def test_fine_tune_from_pytorch_weights_records_what_they_need(tmp_path, capsys):
    from tests.engine import runs

    fixture = fx.load("timm_efficientnet_lite0")  # timm's own Lite0: symmetric padding, BN eps 1e-5, ImageNet mean/std
    source = _write(tmp_path, "lite0", fixture, "safetensors")
    weights = tmp_path / "lite0.weights.h5"
    assert run_inprocess(capsys, "import-weights", str(source), str(weights), "--from", "timm:efficientnet_lite0").code == 0
    gin_path = runs.write_gin(tmp_path, "\n".join([
        "train.model = 'efficientnet_lite0'", "efficientnet.width = None", "efficientnet.depth = None",
        "efficientnet.freeze = 'backbone'", "train.epochs = 1", "train.steps_per_epoch = 2", "train.plot = False", "",
    ]))
    run_dir = tmp_path / "run"
    result = run_inprocess(capsys, *runs.cli_args(gin_path, run_dir), "--from-weights", str(weights))
    assert result.code == 0, result.err
    operative = (run_dir / "operative_config.gin").read_text()
    for line in ("efficientnet.padding = 'symmetric'", "efficientnet.bn_epsilon = 1e-05", "efficientnet.normalization = 'imagenet'"):
        assert line in operative
    # what eval / predict / export build from the run: the source's padding and epsilon, the backbone's weights
    import effnet

    run = effnet.load_run(run_dir)
    assert run.model.get_layer("stem_pad") is not None and run.model.get_layer("stem_bn").epsilon == 1e-5
    state = fx.state_dict(fixture)
    np.testing.assert_array_equal(np.array(run.model.get_layer("stem_conv").kernel.value), state["conv_stem.weight"].transpose(2, 3, 1, 0))
    assert run_inprocess(capsys, "eval", "--model-dir", str(run_dir)).code == 0

    # an efficientnet_pytorch .pth directly (its layout says what it needs), and a config that contradicts the weights
    pytest.importorskip("torch", reason="the torch extra (make test installs it)")
    pth = _write(tmp_path, "b0", fx.load("effnet_pytorch_b0"), "pth")
    b0 = runs.write_gin(tmp_path, "\n".join([
        "train.model = 'efficientnet_b0'", "efficientnet.width = None", "efficientnet.depth = None",
        "efficientnet.freeze = 'backbone'", "train.epochs = 1", "train.steps_per_epoch = 1", "train.plot = False",
        "train.mode = 'train'", "",
    ]), name="b0.gin")
    refused = run_inprocess(capsys, *runs.cli_args(b0, tmp_path / "b0bad", "efficientnet.padding = 'symmetric'"), "--from-weights", str(pth))
    assert refused.code == 2 and "the weights need efficientnet.padding = 'same', the config binds 'symmetric'" in refused.err
    result = run_inprocess(capsys, *runs.cli_args(b0, tmp_path / "b0"), "--from-weights", str(pth))
    assert result.code == 0, result.err
    assert "efficientnet.bn_epsilon = 0.001" in (tmp_path / "b0" / "operative_config.gin").read_text()


def test_a_symmetric_padding_lite_model_saves_and_loads(tmp_path):
    """Serialisation (what export and .keras files use) keeps the padding and the Lite activation."""
    from effnet.plugins.models import load_model

    model = efficientnet("efficientnet_lite0", num_classes=3, width=0.25, depth=0.25, padding="symmetric", input_size=64)
    x = fx.images({"image_seed": 1, "image_size": 64, "batch": 2})
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)
    blocks = [layer for layer in loaded.layers if layer.name.startswith("block")]
    assert all(b.padding == "symmetric" and b.activation == "relu6" for b in blocks)
    assert loaded.get_layer("block2a").dwconv.padding == "valid"


def _as_efficientnet_pytorch(state: dict) -> dict:
    """timm's tensor names -> efficientnet_pytorch's (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...)."""
    block_ids = sorted({tuple(int(p) for p in n.split(".")[1:3]) for n in state if n.startswith("blocks.")})
    flat = {ids: i for i, ids in enumerate(block_ids)}
    ds = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    ir = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1", "conv_pwl": "_project_conv", "bn3": "_bn2"}
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    out = {}
    for name, value in state.items():
        parts = name.split(".")
        if parts[0] == "blocks":
            block = (int(parts[1]), int(parts[2]))
            has_pwl = f"blocks.{block[0]}.{block[1]}.conv_pwl.weight" in state
            out[".".join(["_blocks", str(flat[block]), (ir if has_pwl else ds)[parts[3]], *parts[4:]])] = value
        else:
            out[".".join([top[parts[0]], *parts[1:]])] = value
    return out


def test_lite_weights_in_efficientnet_pytorch_layout_are_detected(tmp_path):
    """Lite checkpoints published in efficientnet_pytorch's layout (no _se_ tensors): Lite0, TF padding, [-1, 1]."""
    fixture = fx.load("timm_tf_efficientnet_lite0")
    path = fx.write_safetensors(tmp_path / "lite0.safetensors", _as_efficientnet_pytorch(fx.state_dict(fixture)))
    model, report = import_keras_weights(path)
    assert model.name == "efficientnet_lite0" and report.normalization == "inception"
    assert report.settings == {"efficientnet.normalization": "inception", "efficientnet.padding": "same", "efficientnet.bn_epsilon": 1e-3}
    assert _max_rel(model(fx.images(fixture), training=False), fixture["logits"]) <= 1e-4
