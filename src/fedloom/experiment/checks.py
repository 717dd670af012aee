"""Field checks for run files: each names the key, shows the bad value and says what is accepted.

Values are shown as TOML writes them (``true``, ``"adam"``), since that is what the user typed.
Option bags (an algorithm's ``mu``, a dataset's ``num_samples``) are checked against the
signature and type hints of the function that will receive them, so the accepted keys can never
drift from the code.
"""

from __future__ import annotations

import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from fedloom.experiment.errors import ExperimentError, KeyPath, key_name

Scalar = bool | int | float | str
OptionValue = Scalar | Sequence[Scalar]
"""A value in an option bag: what TOML can write, short of tables."""
Options = Mapping[str, OptionValue]


def show(value: object) -> str:
    """``value`` as it would be written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def kind_of(value: object) -> str:
    """``"a string"``, ``"an integer"``… as a user would name the TOML type of ``value``."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(
    path: KeyPath,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite number (an int is accepted, a bool is not) within the given bounds."""
    if low is not None and high is not None:
        accepted = (
            f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        )
    elif low is not None:
        accepted = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        accepted = "a finite number"
    if not _is_number(value):
        raise ExperimentError(path, f"must be {accepted}, got {show(value)} ({kind_of(value)})")
    assert isinstance(value, int | float)
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ExperimentError(path, f"must be {accepted}, got {show(value)}")
    return float(value)


def integer(path: KeyPath, value: object, *, minimum: int) -> int:
    """An integer (not a bool, not a float) ``>= minimum``."""
    accepted = f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExperimentError(path, f"must be {accepted}, got {show(value)} ({kind_of(value)})")
    if value < minimum:
        raise ExperimentError(path, f"must be {accepted}, got {show(value)}")
    return value


def text(path: KeyPath, value: object) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ExperimentError(path, f"must be a string, got {show(value)} ({kind_of(value)})")
    return value


def flag(path: KeyPath, value: object) -> bool:
    """A boolean (``true`` or ``false``)."""
    if not isinstance(value, bool):
        raise ExperimentError(
            path, f"must be a boolean (true or false), got {show(value)} ({kind_of(value)})"
        )
    return value


def choice(path: KeyPath, value: object, accepted: Collection[str]) -> str:
    """One of the strings in ``accepted``."""
    names = ", ".join(show(a) for a in accepted)
    if not isinstance(value, str):
        raise ExperimentError(path, f"must be one of {names}, got {show(value)} ({kind_of(value)})")
    if value not in accepted:
        raise ExperimentError(
            path, f"must be one of {names}, got {show(value)}{_hint(value, accepted)}"
        )
    return value


def _hint(name: str, accepted: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(accepted), n=1)
    return f"; did you mean {show(close[0])}?" if close else ""


def no_unknown_keys(table: KeyPath, given: Iterable[str], accepted: Collection[str]) -> None:
    """Refuse the first key of ``given`` that is not in ``accepted``, suggesting a close one."""
    for key in given:
        if key not in accepted:
            where = f"[{key_name(table)}]" if table else "the top level"
            listed = ", ".join(accepted) if accepted else "none"
            raise ExperimentError(
                (*table, key),
                f"unknown key; accepted keys in {where}: {listed}{_hint(key, accepted)}",
            )


def keyword_options(function: Callable[..., Any], provided: Collection[str] = ()) -> list[str]:
    """The keyword arguments of ``function`` a run file may set: all but ``provided``."""
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in provided
    ]


def options(
    table: KeyPath,
    given: Mapping[str, object],
    function: Callable[..., Any],
    *,
    provided: Collection[str] = (),
    table_keys: Sequence[str] = (),
) -> dict[str, OptionValue]:
    """Check an option bag against ``function``'s signature; return it with arrays as tuples.

    ``provided`` are the arguments fedloom passes itself; ``table_keys`` the table's own fixed
    keys, listed with the options when a key is unknown. Required arguments must be present;
    each value must match the argument's type hint.
    """
    if not isinstance(given, Mapping):
        raise ExperimentError(table, f"options must be a table, got {kind_of(given)}")
    names = keyword_options(function, provided)
    no_unknown_keys(table, given, [*table_keys, *names])
    parameters = inspect.signature(function).parameters
    for name in names:
        if parameters[name].default is inspect.Parameter.empty and name not in given:
            raise ExperimentError((*table, name), f"required by {function.__name__}(), missing")
    hints = typing.get_type_hints(function)
    checked: dict[str, OptionValue] = {}
    for name, value in given.items():
        expected = hints.get(name, Any)
        if value is None or not conforms(value, expected):
            raise ExperimentError(
                (*table, name),
                f"must be {describe(expected)}, got {show(value)} ({kind_of(value)})",
            )
        checked[name] = typing.cast(
            OptionValue, tuple(value) if isinstance(value, list | tuple) else value
        )
    return checked


def conforms(value: object, expected: Any) -> bool:
    """Whether ``value`` (a TOML value) fits the type hint ``expected``."""
    origin = typing.get_origin(expected)
    if expected is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, option) for option in typing.get_args(expected))
    if expected is float:
        return _is_number(value)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is typing.Literal:
        return value in typing.get_args(expected)
    if origin in (list, tuple, Sequence) and not isinstance(value, str):
        (item,) = typing.get_args(expected)[:1] or (Any,)
        return isinstance(value, list | tuple) and all(conforms(v, item) for v in value)
    if isinstance(origin or expected, type):
        return isinstance(value, origin or expected)
    return False


def describe(expected: Any) -> str:
    """A type hint in words: ``float | None`` → ``"a number"``."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        alternatives = [describe(o) for o in typing.get_args(expected) if o is not type(None)]
        return " or ".join(w for w in alternatives if w)
    if origin is typing.Literal:
        return "one of " + ", ".join(show(v) for v in typing.get_args(expected))
    if origin in (list, tuple, Sequence):
        (item,) = typing.get_args(expected)[:1] or (Any,)
        return f"an array of {describe(item).split(' ', 1)[-1]}s"
    words = {float: "a number", int: "an integer", str: "a string", bool: "a boolean"}
    return words.get(expected, "") if isinstance(expected, type) else ""


def blamed(
    table: KeyPath,
    names: Mapping[str, object],
    error: ValueError,
    *,
    fallback: KeyPath | None = None,
) -> ExperimentError:
    """A constructor's ValueError, blamed on the option it names.

    fedloom's constructors start their messages with the argument's name (``"mu must be a finite
    number >= 0, got -1"``); failing that, the one option whose value the message quotes is
    blamed; failing that, ``fallback`` (by default the table).
    """
    message = str(error)
    for name in sorted(names, key=len, reverse=True):
        if message.startswith(f"{name} "):
            return ExperimentError((*table, name), message[len(name) + 1 :])
        if message.startswith(f"{name}="):
            return ExperimentError((*table, name), message)
    quoted = [n for n, v in names.items() if f"got {v!r}" in message]
    if len(quoted) == 1:
        return ExperimentError((*table, quoted[0]), message)
    return ExperimentError(table if fallback is None else fallback, message)
