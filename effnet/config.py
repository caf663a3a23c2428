"""gin: finding experiment files, parsing them with precise errors, saving the operative config.

Only core gin is used (``gin.tf`` does not import on TF >= 2.17). ``--gin NAME`` is resolved as a
path first, then in effnet's packaged ``gin/`` folder, then in folders plugins add through
``effnet_gin_paths``; the ``.gin`` suffix is optional. The same folders are gin's search path, so
``include 'base/train.gin'`` works from any file.

Errors are turned into one line ``file:line: what is wrong: 'offending text' (did you mean ...)``
and raised as :class:`~effnet.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gin
from gin import config as gin_config
from gin import config_parser

from effnet import settings  # noqa: F401 - the engine's configurables (train, benchmark, export, loggers)
from effnet.data import options  # noqa: F401 - the input pipeline's configurable (input_pipeline)
from effnet.errors import UserError, closest, did_you_mean
from effnet.files import write_text_atomic
from effnet.registry import get_registry
from effnet.runfolder import OPERATIVE_CONFIG

# Command-line flags that are shorthands for gin macros; used to say which flag sets a macro.
MACRO_FLAGS = {"MODEL_DIR": "--model-dir", "DATA_DIR": "--data-dir"}


def packaged_gin_dir() -> Path:
    """The gin/ folder shipped with effnet.

    An installed wheel has it at ``effnet/gin`` (package data); a source checkout or editable
    install has it at the repository's top-level ``gin/``. It deliberately has no ``__init__.py``:
    a top-level package called ``gin`` would shadow the gin-config library.
    """
    package = Path(__file__).resolve().parent
    installed = package / "gin"
    if installed.is_dir():
        return installed
    return package.parent / "gin"


def search_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Folders searched for gin files after the path itself: packaged gin/, then plugins'."""
    dirs = [packaged_gin_dir(), *get_registry().gin_paths, *extra]
    unique: list[Path] = []
    for d in dirs:
        d = Path(d).resolve()
        if d not in unique:
            unique.append(d)
    return unique


def available_gin_files(dirs: Sequence[Path] | None = None) -> list[str]:
    """Every gin file in the search folders, as the name ``--gin`` accepts (no suffix)."""
    names: set[str] = set()
    for d in dirs if dirs is not None else search_dirs():
        for path in Path(d).rglob("*.gin"):
            names.add(path.relative_to(d).with_suffix("").as_posix())
    return sorted(names)


def resolve_gin_file(name: str, dirs: Sequence[Path] | None = None) -> Path:
    """Turn a ``--gin`` argument into an existing file (UserError naming where it looked)."""
    dirs = list(dirs) if dirs is not None else search_dirs()
    candidates = [Path(name)] if name.endswith(".gin") else [Path(name), Path(name + ".gin")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    for d in dirs:
        for candidate in candidates:
            path = d / candidate
            if path.is_file():
                return path.resolve()
    stem = name[:-4] if name.endswith(".gin") else name
    known = available_gin_files(dirs)
    raise UserError(
        f"gin file {name!r} not found as a path or in {', '.join(str(d) for d in dirs)}"
        f"{did_you_mean(stem, known)}; `effnet config --list` shows the available experiments"
    )


# --------------------------------------------------------------------------------------------------
# Parsing


@dataclass
class ParsedConfig:
    files: list[Path]
    params: list[str]
    includes: list[Path] = field(default_factory=list)  # every file read, in order

    def config_str(self) -> str:
        return gin.config_str()


class _SyntaxOnly(config_parser.ParserDelegate):
    """Lets gin's parser check syntax without resolving any name."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return None

    def macro(self, macro_name):
        return None


def _check_syntax(path: Path, dirs: Sequence[Path], seen: list[Path]) -> None:
    """Parse ``path`` and everything it includes for syntax only, so errors carry the right file."""
    if path in seen:
        return
    seen.append(path)
    text = path.read_text()
    try:
        statements = list(config_parser.ConfigParser(io.StringIO(text), _SyntaxOnly()))
    except SyntaxError as exc:
        raise _syntax_error(exc, path) from None
    except tokenize.TokenError as exc:  # unterminated bracket or string at the end of the file
        line = exc.args[1][0] if len(exc.args) > 1 else len(text.splitlines())
        raise UserError(
            f"{path}:{line}: gin syntax error: {exc.args[0]} (an unclosed bracket or string "
            f"started earlier in the file); close it"
        ) from None
    for statement in statements:
        if isinstance(statement, config_parser.IncludeStatement):
            included = _find_include(statement.filename, path, dirs)
            if included is None:
                raise UserError(
                    f"{path}:{statement.location.line_num}: included gin file "
                    f"{statement.filename!r} not found next to the file or in "
                    f"{', '.join(str(d) for d in dirs)}"
                    f"{did_you_mean(statement.filename.removesuffix('.gin'), available_gin_files(dirs))}"
                )
            _check_syntax(included, dirs, seen)


def _find_include(name: str, parent: Path, dirs: Sequence[Path]) -> Path | None:
    for base in (Path.cwd(), parent.parent, *dirs):
        path = base / name
        if path.is_file():
            return path.resolve()
    return None


def _syntax_error(exc: SyntaxError, path: Path | None) -> UserError:
    location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], tuple) else None
    msg = exc.args[0] if exc.args else str(exc)
    if isinstance(location, config_parser.Location):
        where = f"{location.filename or path}:{location.line_num}"
        text = location.line_content.strip()
    else:
        where = f"{exc.filename or path}:{exc.lineno}"
        text = (exc.text or "").strip()
    return UserError(f"{where}: gin syntax error: {msg.rstrip('.')}: {text!r}; fix the line")


_LOCATION_RE = re.compile(r'\n  In (?:file "(?P<file>[^"]*)",|bindings string) line (?P<line>\d+)\n    (?P<text>[^\n]*)')


def _semantic_error(exc: Exception, default_where: str) -> UserError:
    """Turn gin's ValueError/ImportError (with appended locations) into one line."""
    text_all = str(exc)
    message = text_all.split("\n")[0].strip()
    match = _LOCATION_RE.search(text_all)  # the first location is the innermost one
    if match:
        where = f"{_located(match['file'])}:{match['line']}" if match["file"] else default_where
        text = match["text"].strip()
        # gin appends the formatted arguments to the echoed line; drop them.
        text = re.sub(r"\s*\(\)\s*\{\}$", "", text)
    else:
        where, text = default_where, ""
    hint = _hint_for(message)
    offending = f": {text!r}" if text else ""
    return UserError(f"{where}: {message.rstrip('.')}{offending}{hint}")


def _located(filename: str) -> str:
    """The full path of a file gin names as it was written in an include line."""
    if os.path.isabs(filename):
        return filename
    for prefix in _gin_search_path():
        path = Path(prefix or ".") / filename
        if path.is_file():
            return str(path.resolve())
    return filename


def configurable_names() -> list[str]:
    """Every registered gin configurable, by its short name."""
    return sorted({selector.split(".")[-1] for selector, _ in _gin_registry().items()} - {"macro", "constant", "singleton"})


def configurable_parameters(name: str) -> list[str]:
    configurable = _gin_registry().get_match(name)
    if configurable is None:
        return []
    try:
        return [p for p in inspect.signature(configurable.wrapped).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return []


def _hint_for(message: str) -> str:
    m = re.match(r"No configurable matching (?:reference )?'@?([\w./]+?)(?:\(\))?'", message)
    if m:
        name = m.group(1).split("/")[-1]
        return f"{did_you_mean(name, configurable_names())}; `effnet config --configurables` lists them"
    m = re.match(r"Configurable '([\w.]+)' doesn't have a parameter named '(\w+)'", message)
    if m:
        params = configurable_parameters(m.group(1))
        return f"{did_you_mean(m.group(2), params)}; its parameters are: {', '.join(params)}"
    m = re.match(r"No module named '([\w.]+)'", message)
    if m:
        return "; install the package that provides it or remove the import line"
    return ""


def _undefined_macro_error(exc: ValueError, files: Sequence[Path]) -> UserError | None:
    m = re.match(r"No bindings specified for '([\w./]+)/gin.macro'", str(exc))
    if not m:
        return None
    macro = m.group(1)
    where = ""
    for path in files:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(rf"%{re.escape(macro)}\b", line):
                where = f"{path}:{i}: "
                break
        if where:
            break
    flag = MACRO_FLAGS.get(macro)
    how = f"pass {flag} or --gin-param \"{macro}='...'\"" if flag else f"pass --gin-param \"{macro}=...\""
    return UserError(f"{where}gin macro %{macro} is used but never set; {how}")


def parse(
    gin_files: Sequence[str],
    params: Sequence[str] = (),
    macros: dict[str, object] | None = None,
    finalize: bool = True,
) -> ParsedConfig:
    """Resolve and parse gin files, then macro shorthands from CLI flags, then ``--gin-param``.

    Plugins must be loaded before calling this (their configurables must exist); the registry is
    loaded on first use here. Raises UserError with a one-line message on any problem.
    """
    gin.clear_config()
    dirs = search_dirs()
    files = [resolve_gin_file(name, dirs) for name in gin_files]
    includes: list[Path] = []
    for path in files:
        _check_syntax(path, [*dirs, path.parent], includes)
    _set_search_path([*dirs, *(p.parent for p in files)])
    for path in files:
        try:
            with _quiet_resource_reader():
                gin.parse_config_file(str(path))
        except SyntaxError as exc:
            raise _syntax_error(exc, path) from None
        except (ValueError, ImportError, TypeError, KeyError, AttributeError) as exc:
            raise _semantic_error(exc, str(path)) from None
    for name, value in (macros or {}).items():
        if value is not None:
            gin.parse_config(f"{name} = {value!r}")
    for param in params:
        try:
            gin.parse_config(param)
        except SyntaxError as exc:
            msg = exc.args[0] if exc.args else str(exc)
            raise UserError(f"--gin-param {param!r}: gin syntax error: {msg.rstrip('.')}; use 'scope.name = value'") from None
        except (ValueError, ImportError, TypeError, KeyError, AttributeError) as exc:
            raise _semantic_error(exc, f"--gin-param {param!r}") from None
    if finalize:
        try:
            gin.finalize()
        except ValueError as exc:
            error = _undefined_macro_error(exc, includes)
            if error is None:
                raise _semantic_error(exc, "gin config") from None
            raise error from None
    return ParsedConfig(files=files, params=list(params), includes=includes)


class _DropPathNotFound(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("Path not found")


@contextlib.contextmanager
def _quiet_resource_reader():
    """gin's package-resource reader logs an error for every search-path miss; they are not errors."""
    noise = _DropPathNotFound()
    root = logging.getLogger()
    root.addFilter(noise)
    try:
        yield
    finally:
        root.removeFilter(noise)


# --------------------------------------------------------------------------------------------------
# gin internals: the two private names of gin-config this module needs, each used only here
# (tests/architecture/test_private_apis.py fails loudly when a gin release changes them).


def _gin_registry():
    """gin's registry of configurables (no public API lists them)."""
    return gin_config._REGISTRY


def _gin_search_path() -> list[str]:
    """gin's include search path, in place (gin.add_config_file_search_path appends; nothing public resets)."""
    return gin_config._LOCATION_PREFIXES


def _set_search_path(dirs: Sequence[Path]) -> None:
    prefixes = _gin_search_path()
    del prefixes[:]
    prefixes.append("")
    for d in dirs:
        if str(d) not in prefixes:
            prefixes.append(str(d))


def write_operative_config(model_dir: str | os.PathLike, name: str = OPERATIVE_CONFIG) -> Path:
    """Write the operative config (what was actually used) into ``model_dir``; returns the path.

    Written to a temporary file and renamed, so a crash never leaves half a config.
    """
    return write_text_atomic(Path(model_dir) / name, gin.operative_config_str() or gin.config_str())


__all__ = [
    "OPERATIVE_CONFIG",
    "ParsedConfig",
    "available_gin_files",
    "closest",
    "configurable_names",
    "configurable_parameters",
    "packaged_gin_dir",
    "parse",
    "resolve_gin_file",
    "search_dirs",
    "write_operative_config",
]
