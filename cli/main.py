"""The ``effnet`` command: the click group, its commands (one module each), and the exit-code contract.

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 1 internal failure.
``--debug`` (or ``EFFNET_DEBUG=1``) prints the traceback as well.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

import effnet
from effnet.cli.quiet import install as quiet_native_startup
from effnet.errors import UserError, one_line

from effnet.cli.benchmark import benchmark
from effnet.cli.config import config, plugins
from effnet.cli.data import data
from effnet.cli.evaluate import eval_
from effnet.cli.export import export
from effnet.cli.import_weights import import_weights
from effnet.cli.options import CONTEXT
from effnet.cli.predict import predict
from effnet.cli.sweep import compare, sweep
from effnet.cli.train import train


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


for _command in (train, eval_, predict, benchmark, export, config, plugins, data, import_weights, sweep, compare):
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
