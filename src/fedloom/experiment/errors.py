"""Errors in a run file, and where in the file each one is.

An :class:`ExperimentError` names the key at fault as a path (``("train", "lr")``, or
``("stages", 1, "bound")`` for the second ``[[stages]]`` table) and says what is wrong. Read from a
file, it also carries the file and line, so its message reads like a compiler's::

    digits.toml:14: key 'train.lr': must be a finite number > 0, got -0.1

``tomllib`` reports no positions for keys, so :func:`locate` finds a key's line by scanning the
text for its ``[table]`` or ``[[array]]`` header and then for ``key =`` inside it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

KeyPath = tuple[str | int, ...]
"""A key's place in the document: table names, array positions (0-based) and the key."""


def key_name(path: Sequence[str | int]) -> str:
    """``("stages", 1, "bound")`` → ``"stages[1].bound"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class ExperimentError(ValueError):
    """A run file (or an ``Experiment`` built in Python) that cannot be used, and why.

    ``path`` is the key at fault (empty for the file as a whole), ``problem`` what is wrong with
    it; ``source`` and ``line`` say where it is, when known.
    """

    def __init__(
        self,
        path: Sequence[str | int],
        problem: str,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path: KeyPath = tuple(path)
        self.problem = problem
        self.source = source
        self.line = line
        super().__init__(self.path, problem, source, line)

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = f"{self.source}:{self.line}: " if self.line is not None else f"{self.source}: "
        subject = f"key '{key_name(self.path)}': " if self.path else ""
        return f"{where}{subject}{self.problem}"

    def at(self, source: str, text: str | None) -> ExperimentError:
        """This error placed in ``source``, its line found in ``text`` where possible."""
        if self.source is not None:
            return self
        line = self.line
        if line is None and text is not None and self.path:
            line = locate(text, self.path)
        return ExperimentError(self.path, self.problem, source, line)

    def in_array(self, table: str, index: int) -> ExperimentError:
        """This error, raised by one table of the ``[[table]]`` array, at position ``index``."""
        if self.path[:1] != (table,) or self.path[1:2] == (index,):
            return self
        return ExperimentError((table, index, *self.path[1:]), self.problem, self.source, self.line)


def toml_syntax_error(error: Exception, source: str) -> ExperimentError:
    """Turn a ``tomllib.TOMLDecodeError`` into an error that leads with file and line."""
    message = str(error)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)", message)
    if found is None:
        return ExperimentError((), f"invalid TOML: {message}", source)
    reason = getattr(error, "msg", None) or message[: found.start()]
    return ExperimentError(
        (), f"invalid TOML at column {found.group(2)}: {reason}", source, int(found.group(1))
    )


# --- the locator -------------------------------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_PART = rf"(?:{_BARE}|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGNMENT = re.compile(rf"^\s*({_DOTTED})\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(part[1:-1] if part[:1] in "\"'" else part for part in re.findall(_PART, dotted))


def locate(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line that defines the key at ``path`` in TOML ``text``, or ``None``.

    The key is looked up in the deepest table header that is a prefix of ``path`` (for
    ``("data", "partition", "alpha")`` first ``[data.partition]``, then ``[data]``, then the top
    level), as ``key =`` or a dotted ``a.b =`` inside that table. A key that is absent points at
    its table's header, so a missing required key still gets a line. Multi-line strings whose
    lines look like headers can mislead it; it is a guide for error messages, not a parser.
    """
    target = tuple(path)
    tables: dict[KeyPath, int] = {(): 0}
    keys: dict[KeyPath, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    current: KeyPath = ()
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        quotes = line.count('"""') + line.count("'''")
        if in_multiline:
            in_multiline = quotes % 2 == 0
            continue
        header = _HEADER.match(line)
        if header:
            names = _split_key(header.group(2))
            current = _table_path(names, counts, is_array=header.group(1) == "[[")
            tables.setdefault(current, number)
        else:
            assignment = _ASSIGNMENT.match(line)
            if assignment:
                names = _split_key(assignment.group(1))
                keys.setdefault((*current, *names), number)
                for end in range(1, len(names)):  # a.b = 1 defines table a
                    tables.setdefault((*current, *names[:end]), number)
        in_multiline = quotes % 2 == 1
    for end in range(len(target), 0, -1):
        if target[:end] in keys:
            return keys[target[:end]]
    for end in range(len(target), 0, -1):
        if target[:end] in tables:
            return tables[target[:end]]
    return None


def _table_path(
    names: tuple[str, ...], counts: dict[tuple[str, ...], int], *, is_array: bool
) -> KeyPath:
    """A header's path, with the current position inside every array of tables on the way."""
    if is_array:
        counts[names] = counts.get(names, -1) + 1
    path: list[str | int] = []
    for end in range(1, len(names) + 1):
        path.append(names[end - 1])
        if names[:end] in counts:
            path.append(counts[names[:end]])
    return tuple(path)
