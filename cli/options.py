"""Options and helpers shared by the command modules (kept apart from main.py, which imports the commands)."""

from __future__ import annotations

import functools
import sys

import click

from effnet.files import write_text_atomic
from effnet.precision import PRECISIONS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def gin_options(func):
    """--gin / --gin-param / --model-dir / --data-dir, shared by every command that reads gin."""

    @click.option(
        "--gin", "gin_files", multiple=True, metavar="NAME_OR_PATH",
        help="Experiment file: a path, or a name in effnet's gin/ folder or a plugin's (.gin optional). Repeatable.",
    )
    @click.option(
        "--gin-param", "gin_params", multiple=True, metavar="'SCOPE.NAME=VALUE'",
        help="A gin binding applied after the files, e.g. 'train.epochs=10'. Repeatable.",
    )
    @click.option("--model-dir", type=click.Path(file_okay=False), default=None, help="Run folder (sets the MODEL_DIR macro).")
    @click.option("--data-dir", type=click.Path(), default=None, help="Dataset folder (sets the DATA_DIR macro).")
    @click.option(
        "--trust-config", is_flag=True, expose_value=False, callback=_set_trust, is_eager=True,
        help="Let gin files (and a run folder's operative_config.gin) import any module and include any file. "
             "Off by default: only effnet's plugins may be imported and only the gin search path included. "
             "Same as EFFNET_TRUST_CONFIG=1.",
    )
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def _set_trust(ctx, param, value):
    from effnet import config

    config.set_trust(value)
    return value


checkpoint_option = click.option(
    "--checkpoint", default="latest", show_default=True, metavar="latest|best|PATH",
    help="Which checkpoint: the latest, the best by validation top-1 (meta.json), or a ckpt-* / run folder.")
precision_option = click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                                help="Shorthand for train.precision (default: the run's).")


def load_config(gin_files, gin_params, model_dir=None, data_dir=None, finalize=True):
    """Load plugins, then parse gin with the CLI shorthands applied before --gin-param."""
    from effnet.api import configure

    return configure(gin_files, gin_params, model_dir, data_dir, finalize=finalize)


def progress_bar(total: int, label: str):
    """A progress bar on stderr when it is a terminal (else None: nothing is drawn)."""
    if not sys.stderr.isatty():
        return None
    return click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)


def emit(text: str, output) -> None:
    """Print ``text``, or write it atomically to ``output`` and say so on stderr."""
    if output:
        try:
            write_text_atomic(output, text)
        except OSError as exc:
            from effnet.errors import UserError

            raise UserError(f"could not write {output}: {exc.strerror or exc}; free some space or pass another -o") from None
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


__all__ = ["CONTEXT", "checkpoint_option", "emit", "gin_options", "load_config", "precision_option", "progress_bar"]
