"""Ablations: run one experiment under several sets of gin overrides, one run folder per variant.

A sweep is a list of variants, each a few gin bindings on top of the experiment, from either

- a grid: the cartesian product of ``--vary 'train.ema_decay=[None, 0.99]'`` options, or
- a variants file: ``[name]`` headers, each followed by ``scope.name = value`` lines (parsed as data,
  never executed; see :func:`parse_variants_file`),

optionally repeated for several seeds (``train.seed``). Every variant trains in its own folder under
the sweep root, named after what differs (:func:`run_name`: stable, order-independent, filesystem
safe), as a real ``effnet train`` subprocess, one after another, prefixed by a launcher command
(``horovodrun -np 2``) when one is given. A variant that fails never stops the others; its error line
goes to the summary ``ROOT/sweep.json`` (written atomically after every change of state). Running the
sweep again skips finished runs (a complete ``report.json`` made with the same arguments) and resumes
the others (``effnet train`` continues from the latest checkpoint in its folder).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import hashlib
import io
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gin

from effnet import config
from effnet.checkpoint import ensure_writable
from effnet.compare import RUN_DIR_KEYS, SEED_KEY, SUMMARY, pid_alive, report_complete
from effnet.errors import UserError
from effnet.paths import read_text
from effnet.files import read_json_dict, take_lock, write_json_atomic
from effnet.gintext import canonical, parse_value, short_labels
from effnet.registry import get_registry

__all__ = [
    "SUMMARY",
    "TRAIN_LOG",
    "VARIANTS_SUFFIX",
    "Sweep",
    "Variant",
    "grid",
    "parse_seeds",
    "parse_vary",
    "parse_variants_file",
    "read_summary",
    "report_complete",
    "resolve_variants_file",
    "run_name",
]

TRAIN_LOG = "sweep_train.log"  # in each run folder: the output of every `effnet train` attempt
VARIANTS_SUFFIX = ".variants"
RESERVED_NAMES = {SUMMARY, "compare.png", ".sweep.lock"}
MAX_VARIANTS_FILE = 1 << 20

_KEY_RE = re.compile(r"^(?:[A-Za-z_][\w.]*/)*[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9._+-]+$")
_MAX_NAME = 150


# --------------------------------------------------------------------------------------------------
# Variants


@dataclass
class Variant:
    """One run of the sweep: its folder name, its bindings (key -> canonical gin value), its seed."""

    name: str
    bindings: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    origin: dict[str, str] = field(default_factory=dict)  # key -> where it was written (for errors)

    def params(self) -> list[str]:
        out = [f"{key} = {value}" for key, value in self.bindings.items()]
        if self.seed is not None:
            out.append(f"{SEED_KEY} = {self.seed}")
        return out


def _short_hash(text: str, n: int = 6) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def _value_token(value: str) -> str:
    """A filesystem-safe spelling of a canonical gin value; a hash is added when the spelling loses information."""
    try:
        parsed = parse_value(value, "value")
    except UserError:
        parsed = None
    if isinstance(parsed, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9._+-]*", parsed) and parsed not in ("None", "True", "False"):
        return parsed  # 'single' -> single (no other literal spells like an identifier)
    if not isinstance(parsed, str) and _SAFE_TOKEN.match(value):
        return value  # numbers, None, True, False
    readable = re.sub(r"[^A-Za-z0-9.+-]+", "_", value).strip("_.") or "empty"
    return f"{readable[:40]}-{_short_hash(value)}"


def run_name(bindings: dict[str, str], seed: int | None = None, name: str | None = None) -> str:
    """The folder name of a variant: a function of its bindings (or given name) and seed only.

    ``{'train.ema_decay': 'None', 'train.stage_schedule': "'single'"}`` -> ``ema_decay=None,stage_schedule=single``;
    the order of the bindings does not matter, the same variant always gets the same name.
    """
    if name is None:
        keys = sorted(bindings)
        labels = short_labels(keys)  # 'ema_decay', or the whole key when two share a parameter name
        name = ",".join(f"{labels[k].replace('/', '.')}={_value_token(bindings[k])}" for k in keys)
    parts = [p for p in (name, f"seed={seed}" if seed is not None else "") if p]
    full = ",".join(parts) or "base"
    if len(full) > _MAX_NAME:
        full = f"{full[:_MAX_NAME - 9]}-{_short_hash(full, 8)}"
    return full


def _check_key(key: str, where: str, seeds: bool) -> None:
    if not _KEY_RE.match(key):
        raise UserError(f"{where}: {key!r} is not a gin binding name; write 'scope.name = value', e.g. 'train.ema_decay = 0.99'")
    if key in RUN_DIR_KEYS:
        raise UserError(f"{where}: {key} is set by the sweep (one folder per variant under --model-dir); remove it")
    if key == SEED_KEY and seeds:
        raise UserError(f"{where}: {SEED_KEY} is also set by --seeds; use one of the two")


def parse_vary(option: str, seeds: bool = False) -> tuple[str, list[str]]:
    """``'train.ema_decay=[None, 0.99]'`` -> ``('train.ema_decay', ['None', '0.99'])`` (canonical values)."""
    where = f"--vary {option!r}"
    if "=" not in option:
        raise UserError(f"{where}: expected KEY=[VALUE, ...], e.g. --vary 'train.ema_decay=[None, 0.99]'")
    key, text = (part.strip() for part in option.split("=", 1))
    _check_key(key, where, seeds)
    values = parse_value(text, where)
    if not isinstance(values, list):
        raise UserError(f"{where}: the values must be a bracketed list, e.g. '{key}=[{text}, ...]'; "
                        f"use --gin-param for a single value")
    if not values:
        raise UserError(f"{where}: the list of values is empty; give at least one")
    out = [canonical(v) for v in values]
    dupes = sorted({v for v in out if out.count(v) > 1})
    if dupes:
        raise UserError(f"{where}: value {dupes[0]} appears more than once; list each value once")
    return key, out


def grid(varies: Sequence[str], seeds: bool = False) -> list[Variant]:
    """The cartesian product of ``--vary`` options, in the order given (the last one varies fastest)."""
    axes: list[tuple[str, list[str], str]] = []
    for option in varies:
        key, values = parse_vary(option, seeds)
        if any(key == k for k, _, _ in axes):
            raise UserError(f"--vary {option!r}: {key} is varied twice; put all its values in one list")
        axes.append((key, values, f"--vary {option!r}"))
    variants = []
    for combo in itertools.product(*(values for _, values, _ in axes)):
        bindings = {key: value for (key, _, _), value in zip(axes, combo)}
        variants.append(Variant(name="", bindings=bindings, origin={key: where for key, _, where in axes}))
    return variants


def resolve_variants_file(name: str) -> Path:
    """A path, or a name in effnet's gin/ folder (or a plugin's): 'ablations/quickstart' finds the shipped file."""
    candidates = [Path(name)] if name.endswith(VARIANTS_SUFFIX) else [Path(name), Path(name + VARIANTS_SUFFIX)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    dirs = config.search_dirs()
    for d in dirs:
        for candidate in candidates:
            if (d / candidate).is_file():
                return (d / candidate).resolve()
    known = sorted({p.relative_to(d).as_posix().removesuffix(VARIANTS_SUFFIX) for d in dirs for p in Path(d).rglob(f"*{VARIANTS_SUFFIX}")})
    listing = f"; shipped variants files: {', '.join(known)}" if known else ""
    raise UserError(f"variants file {name!r} not found as a path or in {', '.join(str(d) for d in dirs)}{listing}")


def _needs_more(text: str) -> bool:
    """True while a binding's value has an open bracket or triple-quoted string (continues on the next line)."""
    try:
        for _ in tokenize.generate_tokens(io.StringIO(text + "\n").readline):
            pass
    except tokenize.TokenError:
        return True
    except (SyntaxError, IndentationError):
        return False
    return False


_HEADER_RE = re.compile(r"^\[(?P<name>[^\]]*)\]\s*(?:#.*)?$")
_BINDING_RE = re.compile(r"^(?P<key>[^=\s]+)\s*=(?P<value>.*)$", re.S)


def parse_variants_file(path: str | os.PathLike, seeds: bool = False) -> list[Variant]:
    """Named variants from a small text file (data only: nothing in it is imported or executed)::

        # comments start with '#'
        [baseline]                       # a variant with no overrides

        [no_ema]
        train.ema_decay = None

        [single_stage]
        train.stage_schedule = 'single'
        progressive.base = {'image_size': 48,
                            'dropout': 0.05}   # values may span lines inside brackets

    Every mistake is one UserError naming ``file:line``.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_VARIANTS_FILE:
            raise UserError(f"{path}: {path.stat().st_size} bytes is too large for a variants file (limit {MAX_VARIANTS_FILE}); "
                            f"is this the right file?")
        text = read_text(path, "variants file")  # a FIFO or a device is named, never read
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start}); a variants file is text") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the variants file: {exc.strerror or exc}") from None
    variants: list[Variant] = []
    seen: dict[str, int] = {}
    lines = text.splitlines()
    pending: tuple[int, str, str] | None = None  # (first line, key, value text so far)

    def finish(start: int, key: str, value_text: str) -> None:
        where = f"{path}:{start}"
        if not value_text.strip():
            raise UserError(f"{where}: {key} has no value; write '{key} = VALUE'")
        value = canonical(parse_value(value_text.strip(), where))
        variant = variants[-1]
        if key in variant.bindings:
            raise UserError(f"{where}: {key} is set twice in [{variant.name}] (first at {variant.origin[key]}); keep one")
        variant.bindings[key] = value
        variant.origin[key] = where

    for lineno, raw in enumerate(lines, 1):
        if pending is not None:
            start, key, value_text = pending
            value_text = f"{value_text}\n{raw}"
            if _needs_more(value_text):
                pending = (start, key, value_text)
            else:
                pending = None
                finish(start, key, value_text)
            continue
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        header = _HEADER_RE.match(stripped)
        if header:
            name = header["name"].strip()
            if not _NAME_RE.match(name) or name in RESERVED_NAMES:
                raise UserError(f"{where}: variant name {name!r} must be 1-100 letters, digits, '.', '_', '+' or '-' "
                                f"(it names the run folder), starting with a letter or digit")
            if name in seen:
                raise UserError(f"{where}: variant [{name}] is defined twice (first at line {seen[name]}); rename one")
            seen[name] = lineno
            variants.append(Variant(name=name))
            continue
        first_word = stripped.split()[0]
        if first_word in ("import", "from", "include"):
            raise UserError(f"{where}: {first_word!r} lines are not allowed in a variants file (only '[name]' headers and "
                            f"'scope.name = value' bindings); put imports and includes in the experiment's gin file")
        binding = _BINDING_RE.match(stripped)
        if not binding:
            raise UserError(f"{where}: expected a '[name]' header or a 'scope.name = value' binding, got {stripped[:60]!r}")
        key = binding["key"]
        _check_key(key, where, seeds)
        if not variants:
            raise UserError(f"{where}: binding {key} comes before the first '[name]' header; start each variant with one")
        value_text = binding["value"]
        if _needs_more(value_text):
            pending = (lineno, key, value_text)
        else:
            finish(lineno, key, value_text)
    if pending is not None:
        raise UserError(f"{path}:{pending[0]}: the value of {pending[1]} opens a bracket or string that is never closed; close it")
    if not variants:
        raise UserError(f"{path}: no variants; write '[name]' headers each followed by 'scope.name = value' lines")
    return variants


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not re.fullmatch(r"\d+", part):
            raise UserError(f"--seeds {text!r}: {part!r} is not a non-negative integer; e.g. --seeds 0,1,2")
        if int(part) in seeds:
            raise UserError(f"--seeds {text!r}: seed {part} appears twice")
        seeds.append(int(part))
    return seeds


# --------------------------------------------------------------------------------------------------
# State on disk


def read_summary(root: Path) -> dict | None:
    """The previous sweep.json of ``root``, or None (a damaged file is treated as absent)."""
    data = read_json_dict(Path(root) / SUMMARY)
    if data is None or not isinstance(data.get("runs"), list):
        return None
    return data


def _error_line(log_path: Path, offset: int, code: int) -> str:
    """The one-line error an `effnet train` attempt printed (from ``offset`` in its log), or what ended it."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - 65536))  # the error is at the end of a long log
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        tail = []
    for line in reversed(tail):
        line = line.strip()
        if line.startswith("error:"):
            return line[len("error:"):].strip()  # effnet's one-line user error, without its prefix
        if line.startswith("internal error:"):
            return line
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}; see {log_path}"


def _die_with_parent(parent: int):
    """preexec_fn: on Linux the child gets SIGTERM when the sweep dies (even by SIGKILL), so no orphan keeps training."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec():
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort
            pass
        if os.getppid() != parent:  # the sweep died before prctl took effect
            os._exit(1)

    return preexec


@contextlib.contextmanager
def _lock(root: Path):
    """One sweep at a time per root (released by the kernel even if the sweep is killed); the same lock
    as a training run's folder (effnet.files.take_lock)."""
    path = root / ".sweep.lock"
    lock = take_lock(path, lambda holder: f"another effnet sweep is running in {root} ({holder} holds {path}); "
                                          f"wait for it to end or pick another --model-dir")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# The sweep


@dataclass
class Sweep:
    """A planned sweep: where it lives, what every run shares, the variants, how to start a run."""

    root: Path
    gin_files: list[str]
    variants: list[Variant]
    gin_params: list[str] = field(default_factory=list)
    data_dir: str | None = None
    launcher: list[str] = field(default_factory=list)
    spec: dict = field(default_factory=dict)  # how the variants were given (recorded in sweep.json)

    @classmethod
    def plan(cls, root, gin_files: Sequence[str], gin_params: Sequence[str] = (), data_dir=None,
             varies: Sequence[str] = (), variants_file: str | None = None, seeds: str | None = None,
             launcher: str | None = None, search: bool = False) -> Sweep:
        """Check every input and build the list of runs; raises UserError on the first mistake.

        With ``search`` (``--search optuna``) the runs come from the study (:mod:`effnet.search`): no variants here."""
        if not gin_files:
            raise UserError("no experiment: pass --gin NAME (see `effnet config --list`)")
        if not root:
            raise UserError("no sweep folder: pass --model-dir ROOT (each variant trains in a folder under it)")
        seed_list = parse_seeds(seeds)
        if varies and variants_file:
            raise UserError("pass either --vary options or --variants FILE, not both")
        for param in gin_params:
            key = param.split("=", 1)[0].strip()
            if key in RUN_DIR_KEYS:
                raise UserError(f"--gin-param {param!r}: {key} is set by the sweep (one folder per variant under --model-dir); remove it")
            if key == SEED_KEY and seed_list is not None:
                raise UserError(f"--gin-param {param!r}: {SEED_KEY} is also set by --seeds; use one of the two")
        spec: dict = {"vary": list(varies), "variants_file": None, "seeds": seed_list}
        if search:
            if seed_list is not None:
                raise UserError("--seeds does not go with --search: search train.seed like any binding, or fix it with --gin-param")
            base = []
        elif variants_file:
            path = resolve_variants_file(variants_file)
            spec["variants_file"] = str(path)
            base = parse_variants_file(path, seeds=seed_list is not None)
        elif varies:
            base = grid(varies, seeds=seed_list is not None)
            for v in base:
                v.name = run_name(v.bindings)
        elif seed_list is not None:
            base = [Variant(name="")]
        else:
            raise UserError("nothing to vary: pass --vary 'KEY=[V1, V2]' (repeatable), --variants FILE or --seeds 0,1,2")
        shared = {p.split("=", 1)[0].strip(): p for p in gin_params}
        for v in base:
            for key in v.bindings:
                if key in shared:
                    raise UserError(f"{v.origin.get(key, key)}: {key} is also set by --gin-param {shared[key]!r}; "
                                    f"set it in one place")
        variants = []
        for v in base:
            for seed in seed_list if seed_list is not None else [None]:
                variants.append(Variant(name=run_name(v.bindings, seed, name=v.name),
                                        bindings=dict(v.bindings), seed=seed, origin=dict(v.origin)))
        names = [v.name for v in variants]
        for name in names:
            if names.count(name) > 1:
                raise UserError(f"two variants would share the run folder {name!r}; make their bindings differ")
        launch = []
        if launcher is not None:
            try:
                launch = shlex.split(launcher)
            except ValueError as exc:
                raise UserError(f"--launcher {launcher!r}: {exc}; quote it as one shell word list, e.g. 'horovodrun -np 2'") from None
            if not launch or not all(launch):
                raise UserError(f"--launcher {launcher!r} is empty or has an empty word; give a command such as 'horovodrun -np 2' or leave it out")
            if shutil.which(launch[0]) is None:
                raise UserError(f"--launcher {launcher!r}: command {launch[0]!r} not found (not a file, not on PATH); "
                                f"install it or give its full path")
        spec["launcher"] = launcher
        return cls(root=Path(root).absolute(), gin_files=list(gin_files), variants=variants, gin_params=list(gin_params),
                   data_dir=data_dir, launcher=launch, spec=spec)

    # -- checks and commands --------------------------------------------------------------------

    def validate(self) -> None:
        """Parse the experiment, then the experiment with each variant's bindings (gin names and syntax; nothing is built)."""
        get_registry()
        macros = {"MODEL_DIR": str(self.root), "DATA_DIR": self.data_dir}
        config.parse(self.gin_files, self.gin_params, macros=macros, finalize=False)  # errors shared by every variant
        for v in self.variants:
            params = [*self.gin_params, *v.params()]
            try:
                config.parse(self.gin_files, params, macros={"MODEL_DIR": str(self.folder(v)), "DATA_DIR": self.data_dir},
                             finalize=False)
            except UserError as exc:
                message = str(exc)
                for key, where in v.origin.items():
                    prefix = f"--gin-param {f'{key} = {v.bindings[key]}'!r}: "
                    if message.startswith(prefix):
                        message = f"{where}: {message[len(prefix):]}"
                        break
                raise UserError(f"variant {v.name}: {message}") from None
        gin.clear_config()

    def folder(self, variant: Variant) -> Path:
        return self.root / variant.name

    def train_args(self, variant: Variant) -> list[str]:
        """The `effnet train` arguments of a run (absolute paths, so the same from any working folder)."""
        args = ["train"]
        for name in self.gin_files:
            args += ["--gin", str(config.resolve_gin_file(name))]
        args += ["--model-dir", str(self.folder(variant))]
        if self.data_dir:
            args += ["--data-dir", str(Path(self.data_dir).absolute())]
        for param in [*self.gin_params, *variant.params()]:
            args += ["--gin-param", param]
        return args

    def command(self, variant: Variant) -> list[str]:
        return [*self.launcher, sys.executable, "-m", "effnet.cli.main", *self.train_args(variant)]

    # -- state ----------------------------------------------------------------------------------

    def initial_records(self) -> list[dict]:
        """Each run's record, from disk and the previous sweep.json: done runs stay done, the rest are pending."""
        previous = {r.get("name"): r for r in (read_summary(self.root) or {}).get("runs", []) if isinstance(r, dict)}
        records = []
        for v in self.variants:
            folder = self.folder(v)
            old = previous.get(v.name, {})
            args = self.train_args(v)
            if old.get("status") == "running" and pid_alive(old.get("pid"), folder):
                raise UserError(f"run {v.name} is still being trained by process {old['pid']} (from an earlier sweep); "
                                f"wait for it or stop it, then run the sweep again")
            finished = report_complete(folder)
            changed = finished and old.get("args") not in (None, args)
            done = finished and not changed
            attempts = old.get("attempts") if isinstance(old.get("attempts"), int) else 0
            record = {
                "name": v.name, "folder": str(folder), "bindings": v.bindings, "seed": v.seed,
                "status": "done" if done else "pending",
                "exit_code": old.get("exit_code") if done else None,
                "error": None, "log": str(folder / TRAIN_LOG), "attempts": attempts,
                "pid": None, "seconds": old.get("seconds") if done else None, "args": args,
            }
            if not done and old.get("status") in ("failed", "running", "pending") and old.get("error"):
                record["previous_error"] = old["error"]
            if changed:
                record["note"] = "its arguments changed since it finished: effnet train continues from its last checkpoint"
            records.append(record)
        return records

    def write_summary(self, records: list[dict]) -> Path:
        summary = {
            "version": 1, "updated": _now(), "root": str(self.root),
            "experiment": list(self.gin_files), "gin_params": list(self.gin_params), "data_dir": self.data_dir,
            **self.spec,
            "counts": {s: sum(r["status"] == s for r in records) for s in ("done", "failed", "running", "pending")},
            "runs": records,
        }
        return write_json_atomic(self.root / SUMMARY, summary)

    # -- running --------------------------------------------------------------------------------

    def run(self, echo: Callable[[str], None] = print, env: dict | None = None) -> list[dict]:
        """Train every variant that is not finished, one after another; returns the final records."""
        ensure_writable(self.root)
        with _lock(self.root):
            records = self.initial_records()
            self.write_summary(records)
            child_env = {**os.environ, **(env or {})}
            child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            total = len(records)
            for i, (variant, record) in enumerate(zip(self.variants, records), 1):
                tag = f"[{i}/{total}] {variant.name}"
                if record["status"] == "done":
                    echo(f"{tag}: finished earlier, skipped")
                    continue
                self._run_one(variant, record, records, child_env, echo, tag)
            self.write_summary(records)
        return records

    def _run_one(self, variant, record, records, env, echo, tag) -> None:
        folder = self.folder(variant)
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / TRAIN_LOG
        cmd = self.command(variant)
        resuming = any((folder / "checkpoints").glob("ckpt-*")) if (folder / "checkpoints").is_dir() else False
        note = f"; {record['note']}" if record.get("note") else ""
        echo(f"{tag}: {'resuming' if resuming else 'training'} (output: {log_path}){note}")
        with open(log_path, "a") as log:
            log.write(f"# effnet sweep {_now()}: {shlex.join(cmd)}\n")
            log.flush()
            offset = log.tell()
            start = time.time()
            try:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                        preexec_fn=_die_with_parent(os.getpid()))
            except OSError as exc:  # the launcher vanished or is not executable: this run fails, the others go on
                error = f"cannot start {cmd[0]!r}: {exc.strerror or exc}"
                log.write(f"error: {error}\n")
                record.update(status="failed", pid=None, exit_code=None, error=error, attempts=record["attempts"] + 1)
                echo(f"{tag}: failed: {error}")
                self.write_summary(records)
                return
            record.update(status="running", pid=proc.pid, attempts=record["attempts"] + 1, started=_now(),
                          exit_code=None, error=None)
            self.write_summary(records)
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                _stop(proc)
                record.update(status="pending", pid=None, error="interrupted (the sweep was stopped)")
                self.write_summary(records)
                raise
        seconds = time.time() - start
        record.update(pid=None, exit_code=code, seconds=round(seconds, 1), finished=_now())
        if code == 0 and report_complete(folder):
            record.update(status="done", error=None)
            echo(f"{tag}: done in {seconds:.0f} s")
        else:
            error = _error_line(log_path, offset, code) if code != 0 else "exited 0 without a complete report.json"
            record.update(status="failed", error=error)
            echo(f"{tag}: failed (exit {code}): {error}")
        self.write_summary(records)


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """Give an interrupted run time to stop (it got the same Ctrl-C), then kill it."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
