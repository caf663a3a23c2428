"""Options and helpers shared by the command modules (kept apart from main.py to avoid import cycles)."""

from __future__ import annotations

import functools

import click

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


def load_config(gin_files, gin_params, model_dir=None, data_dir=None, finalize=True):
    """Load plugins, then parse gin with the CLI shorthands applied before --gin-param."""
    from effnet import config
    from effnet.registry import get_registry

    get_registry()
    macros = {"MODEL_DIR": model_dir, "DATA_DIR": data_dir}
    return config.parse(gin_files, gin_params, macros=macros, finalize=finalize)


__all__ = ["CONTEXT", "gin_options", "load_config"]
