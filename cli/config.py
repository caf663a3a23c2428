"""``effnet config`` (the resolved gin config, experiment files, configurables) and ``effnet plugins``."""

from __future__ import annotations

import json

import click

from effnet.cli.options import CONTEXT, gin_options, load_config
from effnet.errors import UserError


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """List every registered plugin by kind, name and source package.

    A plugin that fails to load (or whose hook fails) does not hide the others: it is named on
    stderr after the list, and the exit code is 2.

    \b
    Example:
      effnet plugins
      EFFNET_DISABLE_PLUGIN_AUTOLOAD=1 effnet plugins   # built-ins only
    """
    from effnet.registry import Registry

    registry = Registry(lenient=True)
    rows = [(e.kind, e.name, e.plugin, e.source) for e in registry.entries()]
    gin_dirs = [str(p) for p in registry.gin_paths]
    if as_json:
        click.echo(json.dumps({
            "entries": [dict(zip(("kind", "name", "plugin", "source"), r)) for r in rows],
            "gin_paths": gin_dirs,
            "autoload": registry.autoload,
            "problems": [str(p) for p in registry.problems],
        }, indent=2))
        _report_problems(registry.problems)
        return
    header = ("KIND", "NAME", "PLUGIN", "SOURCE")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for d in gin_dirs:
        click.echo(f"gin folder from a plugin: {d}")
    if not registry.autoload:
        click.echo("(plugin autoloading is off: EFFNET_DISABLE_PLUGIN_AUTOLOAD is set)")
    _report_problems(registry.problems)


def _report_problems(problems) -> None:
    for problem in problems[:-1]:
        click.echo(f"error: {problem}", err=True)
    if problems:  # the last one ends the command (one line, exit 2) after the healthy plugins were listed
        raise problems[-1]


@click.command(context_settings=CONTEXT)
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
            files = cfg.describe_gin_files(d)
            if not files:
                continue
            click.echo(f"# {d}")
            width = max(len(f.name) for f in files)
            for title, experiment in (("experiments (run one with --gin NAME)", True),
                                      ("fragments (included by experiments, not run on their own)", False)):
                group = [f for f in files if f.experiment == experiment]
                if group:
                    click.echo(f"{title}:")
                    for f in group:
                        click.echo(f"  {f.name.ljust(width)}  {f.description}".rstrip())
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


__all__ = ["config", "plugins"]
