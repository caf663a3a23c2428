"""Loop callbacks: plugins that see a training run at its natural points and may ask it to stop.

A callback is registered by name through the ``effnet_callbacks`` hook (:mod:`effnet.hookspecs`)
and switched on with ``train.callbacks = ['early_stopping', ...]``; its knobs are gin bindings of
its factory (``early_stopping.patience = 5``). The loop calls, in this order::

    on_train_begin(run)                      after setup (resumed runs too: run.history holds the past)
      on_stage_begin(run, stage)             a progressive stage starts (stages.Stage)
        on_evaluation_end(run, epoch, metrics)   after a validation pass (val_loss, val_top1 ...)
        on_checkpoint_saved(run, path, step)     after a checkpoint is written
        on_epoch_end(run, epoch, metrics)        after the epoch (metrics: the last evaluation, may be {})
    on_train_end(run, report)                the run finished (report.json's content)

``epoch`` counts from 1. A callback with a ``keep_best = (metric, higher_is_better)`` attribute
chooses which checkpoint retention keeps as the best (default: ``val_ema_top1`` with EMA, else
``val_top1``, higher is better). ``run`` is a :class:`RunView`: read-only facts (``model_dir``, ``epoch``,
``global_step``, ``history``, ``model``, ``is_writer``) and :meth:`RunView.request_stop`.

**Where they run.** Callbacks run on the writing process only (rank 0), so side effects happen
once. A stop request is shared with every process at the next epoch end (and right after
``on_train_begin``), where all processes meet anyway, so no process is left waiting in a
collective. The stop is the same as on SIGTERM: a checkpoint at that point, then the run ends
(``exit_code=0``: normally, with report.json; otherwise with that exit code), and running the
same command resumes there. A resumed run calls ``on_train_begin`` with the history so far, so
a callback can rebuild its state from it (the built-in early stopping does) and stop at the same
point again.

**Failures.** A callback that raises stops the run with a one-line error naming the callback and
its plugin, after the checkpoint of the position reached (no checkpoint is lost).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from effnet import registry
from effnet.errors import UserError

HOOKS = ("on_train_begin", "on_stage_begin", "on_evaluation_end", "on_checkpoint_saved", "on_epoch_end",
         "on_train_end")


class Callback:
    """Base class of loop callbacks: override the hooks you need (each default does nothing)."""

    def on_train_begin(self, run: "RunView") -> None:
        pass

    def on_stage_begin(self, run: "RunView", stage) -> None:
        pass

    def on_evaluation_end(self, run: "RunView", epoch: int, metrics: dict) -> None:
        pass

    def on_checkpoint_saved(self, run: "RunView", path, step: int) -> None:
        pass

    def on_epoch_end(self, run: "RunView", epoch: int, metrics: dict) -> None:
        pass

    def on_train_end(self, run: "RunView", report: dict) -> None:
        pass


class RunView:
    """What a callback sees of the run, and its way to ask for a stop."""

    def __init__(self, facts: Callable[[], dict], stop: Callable[[str, int], None], name: str = ""):
        self._facts = facts
        self._stop = stop
        self.name = name  # the callback's registered name (set per call)

    def __getattr__(self, key):
        facts = self._facts()
        if key in facts:
            return facts[key]
        raise AttributeError(f"a callback's run has no {key!r}; it has {', '.join(sorted(facts))}")

    def request_stop(self, reason: str, exit_code: int = 0) -> None:
        """Stop the run at the next epoch end, after a checkpoint (``exit_code`` 0: a normal end)."""
        self._stop(f"callback {self.name!r}: {reason}", exit_code)


class CallbackList:
    """The run's callbacks by registered name; :meth:`call` runs one hook on each, in order."""

    def __init__(self, names: Sequence[str], view: RunView):
        self.view = view
        self.items: list[tuple[str, object]] = []
        for name in names:
            entry = registry.get_registry().entry("callback", name)
            try:
                callback = entry.factory()
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - a plugin's bug: name it
                raise _failure(name, entry, "its factory", exc) from exc
            self.items.append((name, callback))

    def __bool__(self) -> bool:
        return bool(self.items)

    def checkpoint_ranking(self) -> tuple[str, bool] | None:
        """``(metric, higher_is_better)`` by which a callback keeps the best checkpoint (its ``keep_best``
        attribute), or None to keep the engine's default (validation top-1)."""
        found = [(name, callback.keep_best) for name, callback in self.items if getattr(callback, "keep_best", None)]
        if len(found) > 1:
            raise UserError(f"callbacks {', '.join(repr(n) for n, _ in found)} each choose the best checkpoint; "
                            f"keep one of them in train.callbacks")
        return tuple(found[0][1]) if found else None

    def call(self, hook: str, *args, on_failure: Callable[[], None] | None = None) -> None:
        """Run ``hook`` on every callback; one that raises becomes a one-line UserError (after ``on_failure``)."""
        for name, callback in self.items:
            method = getattr(callback, hook, None)
            if method is None:
                continue
            self.view.name = name
            try:
                method(self.view, *args)
            except Exception as exc:  # noqa: BLE001 - a plugin's bug: name it, keep the checkpoint
                error = _failure(name, registry.get_registry().entry("callback", name), hook, exc)
                if on_failure is not None:
                    on_failure()
                raise error from exc


def _failure(name: str, entry, where: str, exc: BaseException) -> UserError:
    if isinstance(exc, UserError):
        detail = str(exc)
    else:
        detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return UserError(f"callback {name!r} ({entry.origin}) failed in {where}: {detail}; fix the callback or remove "
                     f"it from train.callbacks")


__all__ = ["HOOKS", "Callback", "CallbackList", "RunView"]
