"""`effnet sweep` (train a grid or list of variants) and `effnet compare` (table and curves of runs)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from effnet.cli.options import CONTEXT
from effnet.errors import UserError

FORMAT = click.Choice(["table", "csv", "json", "markdown"])


@click.command(context_settings=CONTEXT)
@click.option("--gin", "gin_files", multiple=True, metavar="NAME_OR_PATH", required=True,
              help="The experiment every variant starts from (as for effnet train). Repeatable.")
@click.option("--gin-param", "gin_params", multiple=True, metavar="'SCOPE.NAME=VALUE'",
              help="A binding shared by every variant, e.g. 'train.epochs=3'. Repeatable.")
@click.option("--model-dir", "root", type=click.Path(file_okay=False), required=True,
              help="Sweep folder: one run folder per variant under it, and sweep.json.")
@click.option("--data-dir", type=click.Path(), default=None, help="Dataset folder (sets the DATA_DIR macro).")
@click.option("--vary", "varies", multiple=True, metavar="'SCOPE.NAME=[V1, V2, ...]'",
              help="A binding and the values to try; several --vary make a grid (every combination).")
@click.option("--variants", "variants_file", metavar="FILE",
              help="A file of named variants ('[name]' then 'scope.name = value' lines); a path, or a name "
                   "in effnet's gin/ folder such as ablations/quickstart.")
@click.option("--seeds", metavar="0,1,2", help="Repeat every variant with these values of train.seed.")
@click.option("--launcher", metavar="'COMMAND'", help="Start each run through this command, e.g. 'horovodrun -np 2'.")
@click.option("--format", "fmt", type=FORMAT, default="table", show_default=True, help="How to print the final comparison.")
@click.option("--dry-run", is_flag=True, help="Print each run's folder, state and command; train nothing.")
@click.option("--search", type=click.Choice(["grid", "optuna"]), default="grid", show_default=True,
              help="grid: every --vary combination or variant; optuna: a search over --vary 'KEY=loguniform(a, b)', "
                   "uniform(a, b), int(a, b), intlog(a, b), choice(a, ...) specs (or a file of them).")
@click.option("--trials", type=int, default=10, show_default=True, help="--search optuna: how many trials the study holds.")
@click.option("--objective", default="val_ema_top1", show_default=True, help="--search optuna: the report.json number to optimise.")
@click.option("--direction", type=click.Choice(["maximize", "minimize"]), default="maximize", show_default=True)
@click.option("--search-seed", type=int, default=0, show_default=True, help="--search optuna: the TPE sampler's seed.")
@click.option("--pruner", type=click.Choice(["median", "halving", "none"]), default="median", show_default=True,
              help="--search optuna: stop trials whose per-epoch evaluation falls behind.")
@click.option("--storage", metavar="URL", default=None,
              help="--search optuna: the study's database (default sqlite:///ROOT/study.db); a shared URL lets "
                   "sweep processes on several machines work on one study.")
def sweep(gin_files, gin_params, root, data_dir, varies, variants_file, seeds, launcher, fmt, dry_run, search, trials,
          objective, direction, search_seed, pruner, storage):
    """Train variants of an experiment one after another, then compare them.

    Each variant trains with `effnet train` in ROOT/<what differs>. A failing variant does not stop
    the others; its error line is kept in ROOT/sweep.json. Run the same command again to skip the
    finished runs and resume the interrupted ones. At the end the runs are compared (as `effnet
    compare ROOT`) and their validation curves drawn in ROOT/compare.png.

    \b
    Examples:
      effnet sweep --gin quickstart --variants ablations/quickstart --model-dir runs/ablation
      effnet sweep --gin quickstart --model-dir runs/ema \\
          --vary 'train.ema_decay=[None, 0.99, 0.999]' --vary 'train.lr_init=[0.002, 0.004]'
      effnet sweep --gin quickstart --model-dir runs/seeds --vary 'train.ema_decay=[None, 0.99]' --seeds 0,1,2
      effnet sweep --gin efficientnet_v2_s/amp_8xA100 --data-dir /data/imagenet --model-dir /results/abl \\
          --variants my.variants --launcher 'horovodrun -np 8'
    """
    from effnet import compare
    from effnet.sweep import Sweep

    if search == "optuna":
        _search(gin_files, gin_params, root, data_dir, varies, variants_file, seeds, launcher, fmt, dry_run, trials,
                objective, direction, search_seed, pruner, storage)
        return
    plan = Sweep.plan(root, gin_files, gin_params, data_dir=data_dir, varies=varies, variants_file=variants_file,
                      seeds=seeds, launcher=launcher)
    plan.validate()
    if dry_run:
        for record in plan.initial_records():
            variant = next(v for v in plan.variants if v.name == record["name"])
            click.echo(f"{record['name']}  [{'finished' if record['status'] == 'done' else 'to run'}]")
            click.echo(f"  {shlex.join(plan.command(variant))}")
        return
    records = plan.run(echo=click.echo)
    comparison = compare.compare(compare.collect([plan.root]))
    click.echo("")
    click.echo(compare.render(comparison, fmt), nl=False)
    try:
        drawn = compare.plot(comparison, plan.root / "compare.png")
        click.echo(f"curves of {len(drawn)} runs: {plan.root / 'compare.png'}")
    except UserError as exc:  # no matplotlib: the table is still there
        click.echo(f"no picture: {exc}")
    failed = [r for r in records if r["status"] != "done"]
    if failed:
        first = failed[0]
        raise UserError(f"{len(failed)} of {len(records)} runs did not finish, e.g. {first['name']}: "
                        f"{first.get('error') or first['status']}; see {plan.root / 'sweep.json'}, fix and run the "
                        f"same command again (finished runs are skipped)")


def _search(gin_files, gin_params, root, data_dir, varies, variants_file, seeds, launcher, fmt, dry_run, trials,
            objective, direction, search_seed, pruner, storage):
    """`effnet sweep --search optuna`: every spec checked (and gin with each), then the study's trials."""
    from effnet import compare, search as search_mod
    from effnet.sweep import Sweep, resolve_variants_file

    if varies and variants_file:
        raise UserError("pass either --vary specs or --variants FILE, not both")
    spaces = (search_mod.parse_space_file(resolve_variants_file(variants_file)) if variants_file
              else search_mod.parse_space(varies))
    plan = Sweep.plan(root, gin_files, gin_params, data_dir=data_dir, seeds=seeds, launcher=launcher, search=True)
    shared = {p.split("=", 1)[0].strip(): p for p in gin_params}
    for space in spaces:
        if space.key in shared:
            raise UserError(f"{space.where}: {space.key} is also set by --gin-param {shared[space.key]!r}; set it in one place")
    study = search_mod.Search(plan, spaces, trials, objective=objective, direction=direction, seed=search_seed,
                              pruner=pruner, storage=storage)
    study.validate()
    if dry_run:
        for space in spaces:
            click.echo(f"{space.key}: {space.kind}{space.args!r}")
        click.echo(f"{trials} trials, {objective} ({direction}), study {study.storage}")
        return
    study.run(echo=click.echo)
    comparison = compare.compare(compare.collect([plan.root]))
    click.echo("")
    click.echo(compare.render(comparison, fmt), nl=False)
    best = study.best_line()
    if best:
        click.echo(best)
    try:
        drawn = search_mod.plot_objective(plan.root, plan.root / "objective.png")
        click.echo(f"objective of {drawn} trials: {plan.root / 'objective.png'}")
    except UserError as exc:  # no matplotlib: the table is still there
        click.echo(f"no picture: {exc}")


@click.command(context_settings=CONTEXT)
@click.argument("run_dirs", nargs=-1, type=click.Path(), metavar="RUN_DIRS...")
@click.option("--format", "fmt", type=FORMAT, default="table", show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw every run's validation curve into this PNG.")
@click.option("--plot-metric", default="top1", show_default=True,
              type=click.Choice(["top1", "val_top1", "val_top5", "val_ema_top1", "val_ema_top5", "val_loss", "val_ema_loss",
                                 "objective"]),
              help="The curve to draw; top1: the EMA weights' top-1 where a run keeps an EMA, else the raw weights'; "
                   "objective: a search's objective over its trials (one `effnet sweep --search optuna` folder).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write the table here instead of stdout.")
def compare(run_dirs, fmt, plot_path, plot_metric, output):
    """Compare runs: a column per gin binding that differs, and the final metrics.

    Bindings come from each run's operative_config.gin (read as text: nothing in it is imported),
    metrics from report.json (raw and EMA validation top-1/top-5 and loss, steps) and log.json (wall
    time over all attempts, training img/s). Runs that differ only in train.seed are merged into
    mean ± standard deviation. A sweep folder stands for all its runs; unfinished and failed runs are
    shown as such.

    \b
    Examples:
      effnet compare runs/ablation
      effnet compare runs/ablation/* --format markdown -o ablation.md
      effnet compare runs/a runs/b --plot curves.png --plot-metric val_ema_top1
    """
    from effnet import compare as compare_mod
    from effnet.files import write_text_atomic
    from effnet.paths import check_output

    if output:
        check_output(output, "-o file", inputs=[*run_dirs, plot_path])
    if plot_path:
        check_output(plot_path, "--plot file", inputs=run_dirs)
    runs = compare_mod.collect(run_dirs)
    if runs and all(run.status == "invalid" for run in runs):  # nothing to compare: not a success
        raise UserError(f"no valid run among the {len(runs)} folder(s), e.g. {runs[0].folder}: {runs[0].error}; "
                        f"pass folders written by `effnet train` or `effnet sweep`")
    comparison = compare_mod.compare(runs)
    text = compare_mod.render(comparison, fmt)
    if output:
        write_text_atomic(Path(output), text)
    else:
        click.echo(text, nl=False)
    if plot_path and plot_metric == "objective":
        from effnet.search import plot_objective

        if len(run_dirs) != 1:
            raise UserError("--plot-metric objective draws one search: pass its sweep folder only")
        drawn = plot_objective(run_dirs[0], plot_path)
        click.echo(f"objective of {drawn} trials: {plot_path}", err=bool(not output))
    elif plot_path:
        drawn = compare_mod.plot(comparison, plot_path, metric=plot_metric)
        click.echo(f"curves of {len(drawn)} runs: {plot_path}", err=bool(not output))


__all__ = ["compare", "sweep"]
