"""The ``effnet`` command: a thin click layer that loads plugins and gin, then calls the engine.

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 1 internal failure.
``--debug`` (or ``EFFNET_DEBUG=1``) prints the traceback as well.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

import effnet
from effnet.cli.quiet import install as quiet_native_startup
from effnet.errors import UserError, one_line

# Shared by every command module (in effnet.cli.options so that command modules can import them
# without importing this module, which imports them).
from effnet.cli.options import CONTEXT, gin_options, load_config  # noqa: F401


@click.group(context_settings=CONTEXT)
@click.option("--debug", is_flag=True, help="Print full tracebacks for errors.")
@click.version_option(effnet.__version__, prog_name="effnet")
def cli(debug: bool) -> None:
    """Train, evaluate and serve EfficientNet V1/V2 image classifiers.

    \b
    Examples:
      effnet train --gin quickstart --model-dir runs/quickstart
      effnet train --gin efficientnet_v2_s/amp_8xA100 --data-dir /data/imagenet --model-dir /results
      effnet eval --model-dir runs/quickstart
      effnet predict --model-dir runs/quickstart photos/
      effnet config --gin efficientnet_v2_s/amp_8xA100 --gin-param 'train.epochs=10'
      effnet plugins
    """


# --------------------------------------------------------------------------------------------------
# train (eval, predict, benchmark and export live in effnet.cli.serve)


@cli.command(context_settings=CONTEXT)
@gin_options
@click.option("--from-weights", type=click.Path(), default=None,
              help="Start a new run from these weights: 'imagenet' (keras.applications' weights, cached in ~/.keras), "
                   "a run or checkpoint folder, or a .weights.h5/.keras file (train.from_weights).")
@click.option("--replace-head", is_flag=True, default=False,
              help="With --from-weights: allow a classifier with another number of classes (train.replace_head).")
def train(gin_files, gin_params, model_dir, data_dir, from_weights, replace_head):
    """Train a model; resumes from the latest checkpoint in --model-dir.

    \b
    Examples:
      effnet train --gin quickstart --model-dir runs/quickstart
      effnet train --gin efficientnet_v2_s/amp_8xA100 --data-dir /data/imagenet --model-dir /results \\
          --gin-param 'train.epochs = 10'
      effnet train --gin image_folder --data-dir photos/ --model-dir runs/photos
      effnet train --gin finetune --data-dir photos/ --model-dir runs/finetune            # ImageNet weights
      effnet train --gin finetune --data-dir photos/ --from-weights v2b0.weights.h5 --replace-head --model-dir ft
    """
    shorthands = []
    if from_weights:
        shorthands.append(f"train.from_weights = {from_weights!r}")
    if replace_head:
        shorthands.append("train.replace_head = True")
    load_config(gin_files, [*shorthands, *gin_params], model_dir, data_dir)
    from effnet.report import summary_lines
    from effnet.train import TrainConfig, run

    report = run(TrainConfig())
    for line in summary_lines(report):
        click.echo(line)


# --------------------------------------------------------------------------------------------------
# plugins / config


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """List every registered plugin by kind, name and source package.

    \b
    Example:
      effnet plugins
      EFFNET_DISABLE_PLUGIN_AUTOLOAD=1 effnet plugins   # built-ins only
    """
    from effnet.registry import get_registry

    registry = get_registry()
    rows = [(e.kind, e.name, e.plugin, e.source) for e in registry.entries()]
    gin_dirs = [str(p) for p in registry.gin_paths]
    if as_json:
        click.echo(json.dumps({
            "entries": [dict(zip(("kind", "name", "plugin", "source"), r)) for r in rows],
            "gin_paths": gin_dirs,
            "autoload": registry.autoload,
        }, indent=2))
        return
    header = ("KIND", "NAME", "PLUGIN", "SOURCE")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for d in gin_dirs:
        click.echo(f"gin folder from a plugin: {d}")
    if not registry.autoload:
        click.echo("(plugin autoloading is off: EFFNET_DISABLE_PLUGIN_AUTOLOAD is set)")


@cli.command(context_settings=CONTEXT)
@gin_options
@click.option("--list", "list_files", is_flag=True, help="List the available experiment files and exit.")
@click.option("--configurables", is_flag=True, help="List every gin configurable and its parameters and exit.")
def config(gin_files, gin_params, model_dir, data_dir, list_files, configurables):
    """Print the fully resolved gin config without running anything.

    \b
    Examples:
      effnet config --gin quickstart
      effnet config --gin efficientnet_v2_s/amp_8xA100 --gin-param 'train.epochs=10'
      effnet config --list
    """
    from effnet import config as cfg
    from effnet.registry import get_registry

    get_registry()
    if list_files:
        for d in cfg.search_dirs():
            names = cfg.available_gin_files([d])
            if names:
                click.echo(f"# {d}")
                for name in names:
                    click.echo(f"  {name}")
        return
    if configurables:
        for name in cfg.configurable_names():
            click.echo(f"{name}({', '.join(cfg.configurable_parameters(name))})")
        return
    if not gin_files and not gin_params:
        raise UserError("nothing to show: pass --gin NAME (see `effnet config --list`) or --gin-param")
    parsed = load_config(gin_files, gin_params, model_dir, data_dir, finalize=False)
    click.echo("# Resolved by `effnet config`")
    for path in parsed.includes:
        click.echo(f"#   read {path}")
    for param in parsed.params:
        click.echo(f"#   --gin-param {param}")
    click.echo(parsed.config_str())


from effnet.cli.data import data as _data  # noqa: E402

cli.add_command(_data)
from effnet.cli.import_weights import import_weights  # noqa: E402

cli.add_command(import_weights)
from effnet.cli.serve import COMMANDS as _serve_commands  # noqa: E402

for _command in _serve_commands:
    cli.add_command(_command)


# --------------------------------------------------------------------------------------------------
# Entry point with the exit-code contract


def _first_line(exc: BaseException) -> str:
    # gin appends "In call to configurable ..." lines to exceptions raised inside configurables.
    text = str(exc).split("\n")[0]
    return one_line(text) or type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    quiet_native_startup(argv)  # TF's native start-up lines off stderr (effnet/cli/quiet.py)
    # TensorFlow's C++ INFO/WARNING chatter (oneDNN notices, CPU feature hints) drowns the output;
    # errors still show. TF_CPP_MIN_LOG_LEVEL=0 (or --debug) shows everything.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("EFFNET_DEBUG", "").lower() in ("1", "true", "yes", "on")
    try:
        result = cli.main(args=args, prog_name="effnet", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("effnet: aborted", err=True)
        code = 130
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        if debug:
            traceback.print_exc()
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f"; see `{exc.ctx.command_path} --help`"
        click.echo(f"error: {one_line(exc.format_message()).rstrip('.')}{hint}", err=True)
        code = 2 if exc.exit_code in (1, 2) else exc.exit_code
    except UserError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {_first_line(exc)}", err=True)
        code = UserError.exit_code
    except KeyboardInterrupt:
        click.echo("effnet: interrupted", err=True)
        code = 130
    except Exception as exc:  # noqa: BLE001 - the contract: internal failures exit 1
        if debug:
            traceback.print_exc()
        click.echo(
            f"internal error: {type(exc).__name__}: {_first_line(exc)} (rerun with --debug for the traceback)",
            err=True,
        )
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
