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
from effnet.paths import check_input, read_bytes
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


# What a gin file (with what it includes) must bind to run on its own with `--gin NAME --model-dir DIR`.
RUNNABLE_KNOBS = ("model", "dataset", "optimizer", "lr_schedule", "stage_schedule", "backend")


@dataclass(frozen=True)
class GinFileInfo:
    """A gin file on the search path: the name ``--gin`` takes, its first comment line, and whether
    it is an experiment (binds every ``RUNNABLE_KNOBS`` of ``train`` through its includes) or a
    fragment meant to be included."""

    name: str
    description: str
    experiment: bool


def describe_gin_files(d: Path) -> list[GinFileInfo]:
    """Every gin file in folder ``d``, experiments and fragments told apart (files are read, not run)."""
    dirs = search_dirs()
    out = []
    for name in available_gin_files([d]):
        path = (Path(d) / f"{name}.gin").resolve()
        try:
            text = read_gin_text(path)
            bound = _bound_train_knobs(path, dirs)
        except UserError:
            out.append(GinFileInfo(name, "(unreadable: `effnet config --gin NAME` says why)", False))
            continue
        first = next((line.lstrip("#").strip() for line in text.splitlines() if line.strip()), "")
        description = first if text.lstrip().startswith("#") else ""
        out.append(GinFileInfo(name, description, bound >= set(RUNNABLE_KNOBS)))
    return out


def _bound_train_knobs(path: Path, dirs: Sequence[Path]) -> set[str]:
    """The ``train.*`` parameters bound by ``path`` and every file it includes."""
    seen: list[Path] = []
    _check_syntax(path, dirs, seen)
    bound = set()
    for file in seen:
        for statement in _statements(read_gin_text(file), file, str(file)):
            if isinstance(statement, config_parser.BindingStatement) and statement.selector == "train" \
                    and not statement.scope:
                bound.add(statement.arg_name)
    return bound


def resolve_gin_file(name: str, dirs: Sequence[Path] | None = None) -> Path:
    """Turn a ``--gin`` argument into an existing file (UserError naming where it looked)."""
    dirs = list(dirs) if dirs is not None else search_dirs()
    candidates = [Path(name)] if name.endswith(".gin") else [Path(name), Path(name + ".gin")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
        if os.path.lexists(candidate) and not candidate.is_dir():  # a FIFO, a device, a loop: say what it is
            check_input(candidate, "gin file")
    for d in dirs:
        for candidate in candidates:
            path = d / candidate
            if path.is_file():
                return path.resolve()
    stem = name[:-4] if name.endswith(".gin") else name
    known = available_gin_files(dirs)
    raise UserError(
        f"gin file {name!r} not found as a path or in {', '.join(str(d) for d in dirs)}"
        f"{_suggest_gin(stem, known)}; `effnet config --list` shows the available experiments"
    )


def _suggest_gin(stem: str, known: Sequence[str]) -> str:
    """' (did you mean ...?)' with the closest experiment names, also those in another folder.

    ``amp_8xA100`` or ``efficientnet_v2/amp_8xA100`` find every ``*/amp_8xA100``; a misspelt name
    finds the closest full names and the closest names within folders.
    """
    import difflib

    base = stem.replace("\\", "/").rsplit("/", 1)[-1].lower()

    def likeness(name: str) -> float:
        return difflib.SequenceMatcher(None, stem.lower(), name.lower()).ratio()

    same_base = sorted((k for k in known if k.rsplit("/", 1)[-1].lower() == base and k != stem), key=likeness, reverse=True)
    if same_base:
        picks = same_base[:4]
    else:
        # the closest full name, then any name (full, or within its folder) that is nearly as close
        scored = sorted(((max(likeness(k), difflib.SequenceMatcher(None, base, k.rsplit("/", 1)[-1].lower()).ratio()), k)
                         for k in known), reverse=True)
        picks = [k for i, (score, k) in enumerate(scored) if score >= (0.6 if i == 0 else 0.8)][:4]
        if not picks:
            return did_you_mean(stem, known)
    if len(picks) == 1:
        return f" (did you mean {picks[0]!r}?)"
    return f" (did you mean {', '.join(repr(p) for p in picks[:-1])} or {picks[-1]!r}?)"


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


# The largest gin file read: experiment files are a few KB; anything this big is not one.
MAX_GIN_BYTES = 4 * 1024 * 1024

TRUST_ENV = "EFFNET_TRUST_CONFIG"
_trust_flag: bool = False


def set_trust(value: bool) -> None:
    """What the CLI's ``--trust-config`` flag sets for the next :func:`parse` calls."""
    global _trust_flag
    _trust_flag = bool(value)


def trusted(trust: bool | None = None) -> bool:
    """Whether gin files may import any module and include any file.

    Off by default: gin files and run folders from elsewhere are data. On with ``trust=True``,
    the CLI flag ``--trust-config`` or the environment variable ``EFFNET_TRUST_CONFIG=1``.
    """
    if trust is not None:
        return bool(trust)
    from effnet.registry import env_flag

    return _trust_flag or env_flag(TRUST_ENV)


_TRUST_HINT = f"pass --trust-config (or set {TRUST_ENV}=1) only if you trust the file"


def allowed_module(module: str) -> bool:
    """An ``import`` line may name effnet itself or an installed effnet plugin (or a module in it)."""
    from effnet.registry import get_registry

    roots = {"effnet"}
    for name, plugin in get_registry().pm.list_name_plugin():
        roots.add(getattr(plugin, "__name__", None) or name)
    return any(module == root or module.startswith(root + ".") for root in roots)


def read_gin_text(path: Path) -> str:
    """A gin file's text, or a one-line UserError if it is unreadable, binary or not UTF-8."""
    try:
        size = path.stat().st_size
        if size > MAX_GIN_BYTES:
            raise UserError(f"{path}: not a gin file: {size} bytes, more than the {MAX_GIN_BYTES} a gin file may have; "
                            f"check the path")
        data = read_bytes(path, "gin file")  # a FIFO or a device is named, never read
    except OSError as exc:
        raise UserError(f"{path}: cannot read gin file: {exc.strerror or exc}; check the path and its permissions") from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise UserError(f"{path}: not a gin file: it is binary (a NUL byte at offset {nul}); pass a text gin file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a gin file: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _statements(text: str, path: Path | None, where: str):
    """gin's parse of ``text`` with no name resolved, errors as one line (``where`` names the source)."""
    try:
        return list(config_parser.ConfigParser(io.StringIO(text), _SyntaxOnly()))
    except SyntaxError as exc:
        if path is None:
            msg = exc.args[0] if exc.args else str(exc)
            raise UserError(f"{where}: gin syntax error: {str(msg).rstrip('.')}; use 'scope.name = value'") from None
        raise _syntax_error(exc, path) from None
    except tokenize.TokenError as exc:  # unterminated bracket or string at the end of the file
        line = exc.args[1][0] if len(exc.args) > 1 else len(text.splitlines())
        raise UserError(
            f"{where}:{line}: gin syntax error: {exc.args[0]} (an unclosed bracket or string "
            f"started earlier); close it"
        ) from None
    except RecursionError:
        raise UserError(f"{where}: gin syntax error: brackets nested too deeply; simplify the value") from None
    except ValueError as exc:  # e.g. a NUL character in a --gin-param
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{where}: gin syntax error: {first}; fix the line") from None


def _check_statements(statements, where_of, dirs: Sequence[Path], trust: bool, seen: list[Path],
                      chain: list[Path]) -> None:
    """Refuse imports and includes a gin file may not make; follow includes."""
    for statement in statements:
        if isinstance(statement, config_parser.ImportStatement) and not trust:
            module = statement.module
            if module.startswith("__gin__."):
                raise UserError(f"{where_of(statement)}: '{statement.format()}' (dynamic registration) is not allowed "
                                f"in an untrusted gin file; {_TRUST_HINT}")
            if not allowed_module(module):
                raise UserError(f"{where_of(statement)}: 'import {module}' is not allowed: gin files may import only "
                                f"effnet and its installed plugins (`effnet plugins` lists them); {_TRUST_HINT}")
        if isinstance(statement, config_parser.IncludeStatement):
            included = _find_include(statement.filename, dirs, trust)
            if included is None:
                raise UserError(
                    f"{where_of(statement)}: included gin file {statement.filename!r} not found in "
                    f"{', '.join(str(d) for d in dirs)}"
                    f"{did_you_mean(statement.filename.removesuffix('.gin'), available_gin_files(dirs))}"
                )
            if included == "outside":
                raise UserError(
                    f"{where_of(statement)}: include {statement.filename!r} is outside the gin search path "
                    f"({', '.join(str(d) for d in dirs)}); copy it next to the experiment file or {_TRUST_HINT}"
                )
            _check_syntax(included, dirs, seen, trust=trust, chain=chain)


def _check_syntax(path: Path, dirs: Sequence[Path], seen: list[Path], trust: bool = False,
                  chain: list[Path] | None = None) -> None:
    """Parse ``path`` and everything it includes without resolving names, so errors carry the right file.

    Also where a gin file is refused: binary/non-UTF-8 text, an include cycle, an include outside the
    search path or an import of a module that is not effnet's or a plugin's (unless trusted).
    """
    chain = list(chain or [])
    if path in chain:
        cycle = " -> ".join(str(p) for p in [*chain[chain.index(path):], path])
        raise UserError(f"{chain[-1]}: gin include cycle: {cycle}; remove one of the include lines")
    chain.append(path)
    if path in seen:
        return
    seen.append(path)
    text = read_gin_text(path)
    statements = _statements(text, path, str(path))
    _check_statements(statements, lambda st: f"{path}:{st.location.line_num}", dirs, trust, seen, chain)


def check_param(param: str, dirs: Sequence[Path], trust: bool, seen: list[Path]) -> None:
    """The same checks for a ``--gin-param`` string (it may hold imports and includes too)."""
    where = f"--gin-param {param!r}"
    statements = _statements(param, None, where)
    _check_statements(statements, lambda st: where, dirs, trust, seen, [])


def _inside(path: Path, dirs: Sequence[Path]) -> bool:
    return any(path == d or d in path.parents for d in dirs)


def _find_include(name: str, dirs: Sequence[Path], trust: bool = False):
    """The file gin will read for ``include name`` (searched in ``dirs`` in gin's order).

    Returns the resolved path, None if there is none, or "outside" when it resolves (through an
    absolute path, ``..`` or a symlink) outside ``dirs`` and the file is not trusted.
    """
    bases = [Path.cwd(), *dirs] if trust else list(dirs)
    for base in bases:
        path = base / name
        try:
            if not path.is_file():
                continue
        except OSError:
            continue
        resolved = path.resolve()
        if not trust and not _inside(resolved, [Path(d).resolve() for d in dirs]):
            return "outside"
        return resolved
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
        for i, line in enumerate(read_gin_text(path).splitlines(), 1):
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
    trust: bool | None = None,
) -> ParsedConfig:
    """Resolve and parse gin files, then macro shorthands from CLI flags, then ``--gin-param``.

    Plugins must be loaded before calling this (their configurables must exist); the registry is
    loaded on first use here. Raises UserError with a one-line message on any problem.

    Unless ``trust`` (or :func:`trusted`): ``include`` may read only files inside the search path
    (packaged gin/, plugins' folders and the folders of the files named here), ``import`` may name
    only effnet and its installed plugins, so a gin file from elsewhere (a run folder's
    operative_config.gin) can neither run code nor read (and echo) other files.
    """
    gin.clear_config()
    trust = trusted(trust)
    dirs = search_dirs()
    files = [resolve_gin_file(name, dirs) for name in gin_files]
    allowed = list(dirs)
    for path in files:
        if path.parent not in allowed:
            allowed.append(path.parent)
    includes: list[Path] = []
    for path in files:
        _check_syntax(path, allowed, includes, trust=trust)
    for param in params:
        check_param(param, allowed, trust, includes)
    _set_search_path(allowed, trust)
    for path in files:
        try:
            with _quiet_resource_reader():
                gin.parse_config_file(str(path))
        except SyntaxError as exc:
            raise _syntax_error(exc, path) from None
        except (ValueError, ImportError, TypeError, KeyError, AttributeError) as exc:
            raise _semantic_error(exc, str(path)) from None
        except RecursionError:
            raise UserError(f"{path}: gin config nested too deeply; simplify it") from None
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
        except RecursionError:
            raise UserError(f"--gin-param {param!r}: nested too deeply; simplify the value") from None
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


def _set_search_path(dirs: Sequence[Path], trust: bool = False) -> None:
    # Untrusted: no "" prefix, so gin resolves includes in exactly the folders _find_include checked
    # (an absolute include still joins to itself, and was refused above if outside them).
    prefixes = _gin_search_path()
    del prefixes[:]
    if trust:
        prefixes.append("")
    for d in dirs:
        if str(d) not in prefixes:
            prefixes.append(str(d))


def bindings_text() -> str:
    """Every gin binding in force, as gin text (what child processes parse to rebuild the same objects)."""
    return gin.config_str()


def write_operative_config(model_dir: str | os.PathLike, name: str = OPERATIVE_CONFIG) -> Path:
    """Write the operative config (what was actually used) into ``model_dir``; returns the path.

    Written to a temporary file and renamed, so a crash never leaves half a config.
    """
    return write_text_atomic(Path(model_dir) / name, gin.operative_config_str() or gin.config_str())


__all__ = [
    "OPERATIVE_CONFIG",
    "ParsedConfig",
    "bindings_text",
    "available_gin_files",
    "closest",
    "configurable_names",
    "configurable_parameters",
    "packaged_gin_dir",
    "parse",
    "resolve_gin_file",
    "search_dirs",
    "set_trust",
    "trusted",
    "write_operative_config",
]
