"""gin file resolution, parsing and the exact shape of every gin error."""

import textwrap
from pathlib import Path

import gin
import pytest

from effnet import config
from effnet.errors import UserError
from tests.clitools import run_inprocess


@gin.configurable("gin_test_train")
def train_cfg(epochs=1, batch_size=8, data_dir=None):
    return epochs, batch_size, data_dir


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def exp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_parse_files_include_and_params(exp):
    write(exp / "base" / "common.gin", """
        gin_test_train.epochs = 3
        gin_test_train.batch_size = 16
    """)
    write(exp / "run.gin", """
        include 'base/common.gin'
        gin_test_train.batch_size = 32
        gin_test_train.data_dir = %DATA_DIR
    """)
    parsed = config.parse(["run"], ["gin_test_train.epochs = 7"], macros={"DATA_DIR": "/data"})
    assert train_cfg() == (7, 32, "/data")
    assert [p.name for p in parsed.includes] == ["run.gin", "common.gin"]


def test_gin_name_resolves_in_packaged_folder(exp):
    path = config.resolve_gin_file("base/loggers")
    assert path == config.packaged_gin_dir() / "base" / "loggers.gin"
    assert config.resolve_gin_file("base/loggers.gin") == path
    assert "base/loggers" in config.available_gin_files()


def test_a_path_wins_over_the_packaged_file(exp):
    local = write(exp / "base" / "loggers.gin", "loggers.names = ('stdout',)\n")
    assert config.resolve_gin_file("base/loggers") == local.resolve()


def test_missing_gin_file(exp):
    with pytest.raises(UserError) as err:
        config.parse(["base/loger"])
    msg = str(err.value)
    assert msg.startswith("gin file 'base/loger' not found as a path or in ")
    assert msg.endswith("(did you mean 'base/loggers'?); `effnet config --list` shows the available experiments")


def test_syntax_error_names_file_line_and_text(exp):
    path = write(exp / "bad.gin", """
        gin_test_train.epochs = 3
        gin_test_train.batch_size 32
    """)
    with pytest.raises(UserError) as err:
        config.parse([str(path)])
    assert str(err.value) == (
        f"{path}:2: gin syntax error: Couldn't parse statement, expected ':' or '=': "
        "'gin_test_train.batch_size 32'; fix the line"
    )


def test_syntax_error_in_included_file_points_into_that_file(exp):
    inner = write(exp / "inner.gin", """
        gin_test_train.epochs = 3
        gin_test_train.batch_size = (1,
    """)
    outer = write(exp / "outer.gin", "include 'inner.gin'\n")
    with pytest.raises(UserError) as err:
        config.parse([str(outer)])
    assert str(err.value).startswith(f"{inner.resolve()}:3: gin syntax error: EOF in multi-line statement")


def test_unknown_configurable_suggests_closest(exp):
    path = write(exp / "typo.gin", """
        gin_test_train.epochs = 3
        gin_test_trian.batch_size = 4
    """)
    with pytest.raises(UserError) as err:
        config.parse([str(path)])
    assert str(err.value) == (
        f"{path}:2: No configurable matching 'gin_test_trian': 'gin_test_trian.batch_size = 4' "
        "(did you mean 'gin_test_train'?); `effnet config --configurables` lists them"
    )


def test_unknown_parameter_suggests_closest(exp):
    path = write(exp / "param.gin", "gin_test_train.epoch = 3\n")
    with pytest.raises(UserError) as err:
        config.parse([str(path)])
    assert str(err.value) == (
        f"{path}:1: Configurable 'gin_test_train' doesn't have a parameter named 'epoch': "
        "'gin_test_train.epoch = 3' (did you mean 'epochs'?); its parameters are: epochs, batch_size, data_dir"
    )


def test_unknown_configurable_in_included_file_points_into_that_file(exp):
    inner = write(exp / "inner2.gin", "gin_test_train.epochs = 1\n\nnot_a_thing.x = 1\n")
    outer = write(exp / "outer2.gin", "include 'inner2.gin'\n")
    with pytest.raises(UserError) as err:
        config.parse([str(outer)])
    assert str(err.value).startswith(f"{inner.resolve()}:3: No configurable matching 'not_a_thing': 'not_a_thing.x = 1'")


def test_missing_include(exp):
    outer = write(exp / "outer3.gin", "gin_test_train.epochs = 1\ninclude 'base/nope.gin'\n")
    with pytest.raises(UserError) as err:
        config.parse([str(outer)])
    assert str(err.value).startswith(f"{outer.resolve()}:2: included gin file 'base/nope.gin' not found in ")


def test_bad_gin_param(exp):
    with pytest.raises(UserError) as err:
        config.parse([], ["gin_test_train.epochs 3"])
    assert str(err.value) == (
        "--gin-param 'gin_test_train.epochs 3': gin syntax error: Couldn't parse statement, "
        "expected ':' or '='; use 'scope.name = value'"
    )
    with pytest.raises(UserError) as err:
        config.parse([], ["gin_test_train.batchsize = 3"])
    assert str(err.value).startswith(
        "--gin-param 'gin_test_train.batchsize = 3': Configurable 'gin_test_train' doesn't have a "
        "parameter named 'batchsize': 'gin_test_train.batchsize = 3' (did you mean 'batch_size'?)"
    )


def test_undefined_macro_names_flag(exp):
    path = write(exp / "macro.gin", "gin_test_train.epochs = 2\ngin_test_train.data_dir = %DATA_DIR\n")
    with pytest.raises(UserError) as err:
        config.parse([str(path)])
    assert str(err.value) == (
        f"{path}:2: gin macro %DATA_DIR is used but never set; pass --data-dir or --gin-param \"DATA_DIR='...'\""
    )


def test_import_of_missing_module(exp):
    path = write(exp / "imp.gin", "import not_installed_pkg.models\n")
    with pytest.raises(UserError) as err:
        config.parse([str(path)], trust=True)
    assert str(err.value) == (
        f"{path}:1: No module named 'not_installed_pkg': 'import not_installed_pkg.models'; "
        "install the package that provides it or remove the import line"
    )


def test_import_line_registers_configurables(exp, tmp_path, monkeypatch):
    write(tmp_path / "gin_import_mod.py", """
        import gin
        @gin.configurable
        def imported_thing(value=1):
            return value
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(exp / "imp2.gin", "import gin_import_mod\nimported_thing.value = 5\n")
    with pytest.raises(UserError, match=r"imp2.gin:1: 'import gin_import_mod' is not allowed"):
        config.parse([str(path)])
    assert "gin_import_mod" not in __import__("sys").modules  # refused before anything ran
    config.parse([str(path)], trust=True)
    import gin_import_mod

    assert gin_import_mod.imported_thing() == 5


def test_operative_config_written_atomically(exp):
    config.parse([], ["gin_test_train.epochs = 4"])
    train_cfg()
    path = config.write_operative_config(exp / "run")
    assert path == exp / "run" / "operative_config.gin"
    assert "gin_test_train.epochs = 4" in path.read_text()
    assert not list((exp / "run").glob("*.tmp"))


@pytest.mark.parametrize("args,fragment", [
    (["--gin", "nope"], "error: gin file 'nope' not found"),
    (["--gin-param", "gin_test_train.epochz = 3"], "(did you mean 'epochs'?)"),
    (["--gin-param", "gin_test_train.epochs 3"], "gin syntax error"),
])
def test_cli_gin_errors_exit_2_with_one_line(exp, capsys, args, fragment):
    result = run_inprocess(capsys, "config", *args)
    assert result.code == 2
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    assert fragment in result.err
    assert "Traceback" not in result.err


def test_cli_config_prints_resolved_config(exp, capsys):
    write(exp / "c.gin", "include 'base/loggers.gin'\ngin_test_train.epochs = 2\n")
    result = run_inprocess(capsys, "config", "--gin", "c", "--gin-param", "gin_test_train.batch_size = 5")
    assert result.code == 0, result.err
    assert "gin_test_train.epochs = 2" in result.out
    assert "gin_test_train.batch_size = 5" in result.out
    assert "loggers.names = ('dllogger', 'stdout', 'tensorboard')" in result.out
    assert "#   read " in result.out and "loggers.gin" in result.out


def test_cli_config_lists(exp, capsys):
    result = run_inprocess(capsys, "config", "--list")
    assert result.code == 0 and "base/loggers" in result.out
    # experiments (runnable with --gin alone) apart from fragments, each with its one-line description
    packaged = result.out.split("# ")[1]
    experiments, fragments = packaged.split("experiments (run one with --gin NAME):\n")[1].split("fragments (")
    assert "quickstart" in experiments and "efficientnet_v2_s/amp_8xA100" in experiments and "image_folder" in experiments
    for fragment in ("base/train", "base/loggers", "data/imagenet", "models/efficientnet_v2_s"):
        assert fragment in fragments and fragment not in experiments
    line = next(ln for ln in experiments.splitlines() if ln.split()[:1] == ["quickstart"])
    assert "demo data" in line
    result = run_inprocess(capsys, "config", "--configurables")
    assert result.code == 0 and "gin_test_train(epochs, batch_size, data_dir)" in result.out
