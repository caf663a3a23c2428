"""Plugin discovery and the name registry behind every hook point.

Plugins come from three places, in this order:

1. the built-in modules listed in :data:`effnet.plugins.BUILTIN`;
2. modules named in the ``EFFNET_PLUGINS`` environment variable (comma-separated), which load
   even when autoloading is off;
3. the ``effnet`` entry-point group of every installed distribution, unless
   ``EFFNET_DISABLE_PLUGIN_AUTOLOAD`` is set to a true value (1, true, yes, on).

Each registration hook (see :mod:`effnet.hookspecs`) is called once per plugin so that every
name knows where it came from; that is how a duplicate name can name both origins.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pluggy

from effnet import hookspecs
from effnet.errors import UserError, closest, did_you_mean

AUTOLOAD_ENV = "EFFNET_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "EFFNET_PLUGINS"
ENTRY_POINT_GROUP = "effnet"

# kind -> hook name. The kind is what users see in messages and in `effnet plugins`.
KINDS: dict[str, str] = {
    "model": "effnet_models",
    "optimizer": "effnet_optimizers",
    "lr_schedule": "effnet_lr_schedules",
    "augmenter": "effnet_augmenters",
    "stage_schedule": "effnet_stage_schedules",
    "dataset": "effnet_datasets",
    "logger": "effnet_loggers",
    "backend": "effnet_backends",
    "callback": "effnet_callbacks",
}


def env_flag(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable: 1/true/yes/on are true, 0/false/no/off/'' false."""
    value = os.environ.get(name)
    if value is None:
        return default
    value = value.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise UserError(f"environment variable {name}={value!r} is not a boolean; use 1 or 0")


@dataclass(frozen=True)
class Entry:
    """One registered name."""

    kind: str
    name: str
    factory: Callable
    plugin: str  # module or plugin name
    source: str  # distribution "name version", or "built-in"

    @property
    def origin(self) -> str:
        return f"{self.plugin} ({self.source})"


class _PluginManager(pluggy.PluginManager):
    """Treats any ``effnet_*`` function as a hook implementation, marked or not.

    That way a misspelt hook (``effnet_modles``) is not silently ignored: it becomes an
    implementation without a spec, which :meth:`check_pending` reports.
    """

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("effnet_"):
            method = getattr(plugin, name, None)
            if callable(method):
                opts = {}
        return opts


class Registry:
    """All plugins and everything they registered, by kind and name."""

    def __init__(self, autoload: bool | None = None, extra_plugins: list[object] | None = None,
                 lenient: bool = False):
        """``lenient``: a plugin that fails to load or whose hook fails is left out and its one-line
        error kept in :attr:`problems` instead of raised (``effnet plugins`` lists the others)."""
        self.lenient = lenient
        self.problems: list[UserError] = []  # with their cause attached, for --debug
        self.pm = _PluginManager("effnet")
        self.pm.add_hookspecs(hookspecs)
        self._sources: dict[str, str] = {}
        self.autoload = (not env_flag(AUTOLOAD_ENV)) if autoload is None else autoload
        self._load_builtins()
        self._load_env_plugins()
        if self.autoload:
            self._load_entry_points()
        for plugin in extra_plugins or []:
            self._register(plugin, getattr(plugin, "__name__", None) or repr(plugin), "explicit")
        self._check_pending()
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            self._collect(kind)
        self.gin_paths = self._collect_gin_paths()

    # -- loading ---------------------------------------------------------------------------------
    def _register(self, plugin, name: str, source: str) -> None:
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:  # already registered (same module twice)
            if self.pm.get_plugin(name) is not plugin:
                raise UserError(f"plugin name {name!r} from {source} is already taken: {exc}")
            return
        self._sources[name] = source

    def _problem(self, error: UserError, cause: BaseException | None = None) -> None:
        """Raise ``error`` (from ``cause``), or keep it in :attr:`problems` when lenient."""
        error.__cause__ = cause
        if not self.lenient:
            raise error
        self.problems.append(error)

    def _import(self, module: str, source: str, hint: str):
        try:
            return importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's problem
            self._problem(UserError(
                f"plugin module {module!r} from {source} failed to import: "
                f"{type(exc).__name__}: {exc}; {hint}"
            ), exc)
            return None

    def _load_builtins(self) -> None:
        from effnet.plugins import BUILTIN

        for module in BUILTIN:
            plugin = self._import(module, "built-in", "this is a bug in effnet")
            if plugin is not None:
                self._register(plugin, module, "built-in")

    def _load_env_plugins(self) -> None:
        for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
            plugin = self._import(module, f"${PLUGINS_ENV}", f"fix or remove it from ${PLUGINS_ENV}")
            if plugin is not None:
                self._register(plugin, module, f"${PLUGINS_ENV}")

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            source = f"{dist.metadata['Name']} {dist.version}" if dist else "unknown distribution"
            if self.pm.get_plugin(ep.name) is not None or self.pm.is_blocked(ep.name):
                continue
            hint = f"reinstall or uninstall {source.split()[0]}, or set {AUTOLOAD_ENV}=1"
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001
                self._problem(UserError(
                    f"plugin {ep.name!r} ({ep.value}) from {source} failed to load: "
                    f"{type(exc).__name__}: {exc}; {hint}"
                ), exc)
                continue
            if self.pm.is_registered(plugin):  # already loaded through $EFFNET_PLUGINS
                continue
            self._register(plugin, ep.name, source)

    def _check_pending(self) -> None:
        hooks = [name for name in dir(hookspecs) if name.startswith("effnet_")]
        for name in dir(self.pm.hook):
            if name.startswith("_"):
                continue
            caller = getattr(self.pm.hook, name)
            if caller.spec is None:
                for impl in list(caller.get_hookimpls()):
                    self._problem(UserError(
                        f"plugin {impl.plugin_name!r} ({self._sources.get(impl.plugin_name, '?')}) "
                        f"implements unknown hook {name!r}{did_you_mean(name, hooks)}; "
                        f"known hooks: {', '.join(hooks)}"
                    ))
                    self.pm.unregister(impl.plugin)  # lenient: leave the broken plugin out
        self.pm.check_pending()

    # -- collecting --------------------------------------------------------------------------------
    def _call_hook(self, impl, hook: str):
        """``impl``'s hook function called; an exception becomes one line naming the plugin (None when lenient)."""
        try:
            return impl.function()
        except Exception as exc:  # noqa: BLE001 - a plugin's bug: name the plugin, not just the exception
            detail = " ".join(str(exc).split())[:200]
            self._problem(UserError(
                f"plugin {impl.plugin_name!r} ({self._sources.get(impl.plugin_name, '?')}): {hook}() raised "
                f"{type(exc).__name__}: {detail}; fix or uninstall the plugin, or set {AUTOLOAD_ENV}=1"
            ), exc)
            return None

    def _collect(self, kind: str) -> None:
        caller = getattr(self.pm.hook, KINDS[kind])
        # get_hookimpls() is in registration order: built-ins first.
        for impl in caller.get_hookimpls():
            source = self._sources.get(impl.plugin_name, "?")
            result = self._call_hook(impl, KINDS[kind])
            if result is None:
                continue
            if not isinstance(result, Mapping):
                self._problem(UserError(
                    f"plugin {impl.plugin_name!r} ({source}): {KINDS[kind]}() must return a dict "
                    f"of name -> factory, got {type(result).__name__}"
                ))
                continue
            for name, factory in result.items():
                if not isinstance(name, str) or not callable(factory):
                    self._problem(UserError(
                        f"plugin {impl.plugin_name!r} ({source}): {KINDS[kind]}() entry {name!r} "
                        f"must map a string to a callable, got {type(factory).__name__}"
                    ))
                    continue
                entry = Entry(kind, name, factory, impl.plugin_name, source)
                previous = self._entries[kind].get(name)
                if previous is not None:
                    self._problem(UserError(
                        f"{kind} {name!r} is registered twice: by {previous.origin} and by "
                        f"{entry.origin}; uninstall one of them or rename the {kind}"
                    ))
                    continue
                self._entries[kind][name] = entry

    def _collect_gin_paths(self) -> list[Path]:
        paths: list[Path] = []
        for impl in self.pm.hook.effnet_gin_paths.get_hookimpls():
            for path in self._call_hook(impl, "effnet_gin_paths") or []:
                path = Path(path)
                if not path.is_dir():
                    self._problem(UserError(
                        f"plugin {impl.plugin_name!r} ({self._sources.get(impl.plugin_name, '?')}) "
                        f"declares gin folder {str(path)!r}, which does not exist"
                    ))
                    continue
                paths.append(path)
        return paths

    # -- queries -------------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        return sorted(self._entries[kind])

    def entry(self, kind: str, name: str) -> Entry:
        self._check_kind(kind)
        entries = self._entries[kind]
        if name not in entries:
            available = sorted(entries)
            raise UserError(
                f"unknown {kind} {name!r}{did_you_mean(name, available)}; "
                f"available {kind}s: {', '.join(available) or '(none)'}"
            )
        return entries[name]

    def get(self, kind: str, name: str) -> Callable:
        """The factory registered as ``name`` for ``kind`` (a UserError if there is none)."""
        return self.entry(kind, name).factory

    def entries(self) -> list[Entry]:
        return [e for kind in KINDS for e in sorted(self._entries[kind].values(), key=lambda e: e.name)]

    def plugins(self) -> list[tuple[str, str]]:
        """(plugin name, source) for every loaded plugin, built-ins first."""
        return [(name, self._sources.get(name, "?")) for name, _ in self.pm.list_name_plugin()]

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded plugins (tests, or after installing a plugin in the same process)."""
    global _REGISTRY
    _REGISTRY = None


def get(kind: str, name: str) -> Callable:
    """Shorthand for ``get_registry().get(kind, name)``."""
    return get_registry().get(kind, name)


__all__ = ["KINDS", "Entry", "Registry", "get", "get_registry", "reset_registry", "closest", "env_flag"]
