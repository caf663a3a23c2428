"""Range checks for numeric settings, with one error message shape for all of them.

Every numeric knob (``train.*``, ``input_pipeline.*``, ``efficientnet.*``, optimizers, schedules,
``benchmark.*``) is checked when its configurable is called, before any work uses it. An error
names the gin key, the value and the allowed range::

    train.lr_init=-0.5 is out of range: allowed (0, 10]; ...

Plugins may use :func:`check_number` for their own knobs (it is part of the public API).
"""

from __future__ import annotations

import math
import numbers

from effnet.errors import UserError

__all__ = ["MAX_IMAGE_SIZE", "check_number", "check_pair"]

#: The largest image side effnet trains, evaluates or benchmarks at. The largest published
#: EfficientNet resolution is 800 px (L2); at 4096 px one image's stem activations alone
#: (32 channels x 2048^2 x 4 bytes) take 512 MiB, so anything bigger is a typo, not an experiment.
MAX_IMAGE_SIZE = 4096


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x)) if abs(x) >= 1 or x == 0 else repr(x)
    return repr(x)


def describe_range(low=None, high=None, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_fmt(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_fmt(high)}"
    return "any finite number"


def check_number(key: str, value, low=None, high=None, *, low_open: bool = False, high_open: bool = False,
                 integer: bool = False, optional: bool = False, hint: str = ""):
    """Return ``value`` if it is a number in the range, else raise a one-line UserError.

    ``key`` is the gin name (``train.lr_init``); ``optional`` allows None; ``integer`` refuses
    floats (and booleans always). ``hint`` is appended as what to do; by default the message
    says which values are allowed.
    """
    if value is None and optional:
        return value
    allowed = describe_range(low, high, low_open, high_open)
    what = f"an integer {allowed}" if integer else f"a number {allowed}"
    if optional:
        what += " or None"
    todo = hint or "fix it in the gin file or --gin-param"
    problem = None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        problem = "is not a number"
    elif integer and not isinstance(value, numbers.Integral):
        problem = "is not an integer"
    elif not math.isfinite(float(value)):
        problem = "is not finite"
    elif (low is not None and (value <= low if low_open else value < low)) or \
            (high is not None and (value >= high if high_open else value > high)):
        problem = "is out of range"
    if problem:
        raise UserError(f"{key}={value!r} {problem}: allowed {what}; {todo}")
    return value


def check_pair(key: str, value, low=None, high=None, *, low_open: bool = False, high_open: bool = False):
    """A (low, high) pair of numbers, each in the range and low <= high."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2:
        raise UserError(f"{key}={value!r} must be a pair (low, high) of numbers "
                        f"{describe_range(low, high, low_open, high_open)}")
    for v in pair:
        check_number(key, v, low, high, low_open=low_open, high_open=high_open)
    if pair[0] > pair[1]:
        raise UserError(f"{key}={value!r}: low {pair[0]!r} is above high {pair[1]!r}; swap them")
    return pair
