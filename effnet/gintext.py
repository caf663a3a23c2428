"""Reading gin bindings as data: a run's operative config, a sweep's values, a variants file.

gin's own grammar (``gin.config_parser.ConfigParser``) turns text into statements without resolving
or importing anything; this module walks those statements and keeps only the bindings. ``import``
and ``include`` lines are never acted on, so a run folder from someone else cannot make effnet import
a module by putting ``import something`` in its operative config. Never hand such a file to
``gin.parse_config``: that executes its imports.

Values are kept in a canonical text form (:func:`canonical`) so that ``0.99`` and ``0.990``, or
``{'a': 1, 'b': 2}`` and ``{'b': 2, 'a': 1}``, compare equal.
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import dataclass

from gin import config_parser

from effnet.errors import UserError

__all__ = ["Binding", "Reference", "binding_key", "canonical", "parse_bindings", "parse_value", "short_labels"]


@dataclass(frozen=True)
class Reference:
    """A ``@configurable`` / ``@configurable()`` reference or a ``%MACRO``, kept by name."""

    text: str

    def __repr__(self) -> str:
        return self.text


class _AsData(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name, evaluate):
        return Reference(f"@{scoped_configurable_name}{'()' if evaluate else ''}")

    def macro(self, macro_name):
        return Reference(f"%{macro_name}")


@dataclass(frozen=True)
class Binding:
    key: str  # 'scope/configurable.param' or 'MACRO'
    value: str  # canonical text
    line: int


def binding_key(statement) -> str:
    scope = f"{statement.scope}/" if statement.scope else ""
    if not statement.arg_name:  # a macro: MODEL_DIR = '...'
        return f"{scope}{statement.selector}"
    return f"{scope}{statement.selector}.{statement.arg_name}"


def canonical(value) -> str:
    """One text per value: dict keys sorted, containers and scalars as Python writes them."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: canonical(kv[0]))
        return "{" + ", ".join(f"{canonical(k)}: {canonical(v)}" for k, v in items) + "}"
    if isinstance(value, tuple):
        inner = ", ".join(canonical(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(canonical(v) for v in value) + "]"
    return repr(value)


def _statements(text: str, where: str, with_line: bool = True):
    """gin statements of ``text``; syntax errors become one line naming ``where``(:line)."""
    parser = config_parser.ConfigParser(io.StringIO(text), _AsData())
    try:
        yield from parser
    except SyntaxError as exc:
        location = exc.args[1] if len(exc.args) > 1 else None
        line = getattr(location, "line_num", None) or exc.lineno or "?"
        content = (getattr(location, "line_content", None) or exc.text or "").strip()
        msg = (exc.args[0] if exc.args else str(exc)).split("\n")[0].rstrip(".")
        at = f"{where}:{line}" if with_line else where
        if not with_line:
            content = content.removeprefix("_value = ")
        raise UserError(f"{at}: gin syntax error: {msg}: {content!r}") from None
    except tokenize.TokenError as exc:
        raise UserError(f"{where}: gin syntax error: {exc.args[0]} (an unclosed bracket or string)") from None


def parse_bindings(text: str, where: str) -> list[Binding]:
    """Every binding in a gin text, in order; import/include lines are skipped, never executed."""
    out = []
    for statement in _statements(text, where):
        if isinstance(statement, config_parser.BindingStatement):
            out.append(Binding(binding_key(statement), canonical(statement.value), statement.location.line_num))
    return out


def parse_value(text: str, where: str):
    """Parse one gin value (a literal, container, ``@reference`` or ``%MACRO``) as data."""
    statements = list(_statements(f"_value = {text}\n", where, with_line=False))
    if len(statements) != 1 or not isinstance(statements[0], config_parser.BindingStatement):
        raise UserError(f"{where}: {text!r} is not one gin value")
    return statements[0].value


def short_labels(keys) -> dict[str, str]:
    """Each key's parameter name ('train.ema_decay' -> 'ema_decay') when no other key has it, else the whole key."""
    keys = list(keys)
    last = [k.rsplit(".", 1)[-1].rsplit("/", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}
