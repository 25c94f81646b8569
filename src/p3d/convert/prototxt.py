"""A small reader for Caffe's ``.prototxt`` files (the protobuf text format), schema-free.

The authors' deploy files use their Caffe fork's ``bn_param`` and ``pooling3d_param``, which BVLC's
``caffe.proto`` does not know, so ``google.protobuf.text_format`` with the BVLC schema rejects them.  This reader
needs no schema: it returns every message as a :class:`Message`, a mapping from field name to the list of values
the field had (protobuf fields may repeat).  Scalars come back as ``str`` (quoted strings and enum identifiers),
``int``, ``float`` or ``bool`` (``true``/``false``).

Supported syntax: ``name: value``, ``name { ... }``, ``name: { ... }``, ``name < ... >``, ``name: [v1, v2]``,
``#`` comments, optional ``,``/``;`` separators, adjacent string literals concatenated.  Errors name the file and
line.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Message", "parse_prototxt", "read_prototxt", "PrototxtError"]


# protobuf's own text parser refuses messages nested deeper than 100 levels (its default recursion limit); integers
# are at most 64 bits (20 decimal digits), so longer literals are refused before Python converts them.
MAX_DEPTH = 100
MAX_INT_DIGITS = 100


class PrototxtError(ValueError):
    """A prototxt file cannot be parsed; the message names the file and line."""


class Message(dict[str, list[Any]]):
    """A parsed text-format message: field name → list of values (in file order)."""

    def get1(self, key: str, default: Any = None) -> Any:
        """The field's value (the last one if it repeats, as protobuf does for singular fields), or ``default``."""
        values = self.get(key)
        return values[-1] if values else default

    def all(self, key: str) -> list[Any]:
        """Every value of a (repeated) field, ``[]`` when absent."""
        return list(self.get(key, ()))

    def msg(self, key: str) -> Message:
        """A sub-message, or an empty :class:`Message` when absent (as protobuf returns the default instance)."""
        value = self.get1(key)
        if value is None:
            return Message()
        if not isinstance(value, Message):
            raise PrototxtError(f"field {key!r} is a scalar ({value!r}), not a message")
        return value


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?[fF]?|inf(?:inity)?\b|nan\b))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}:<>\[\],;])
    """,
    re.X,
)


def _tokens(text: str, source: str) -> Iterator[tuple[str, str, int]]:
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PrototxtError(f"{source}:{line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        value = m.group()
        if kind != "space":
            yield kind, value, line
        line += value.count("\n")
        pos = m.end()


def _scalar(kind: str, value: str, source: str, line: int) -> Any:
    if kind == "str":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError) as e:
            raise PrototxtError(f"{source}:{line}: bad string literal {value}") from e
    if kind == "num":
        v = value.rstrip("fF") if not value.lower().startswith(("0x", "-0x", "+0x")) else value
        low = v.lower().lstrip("+-")
        if low.startswith("inf") or low == "nan":
            return float(v.replace("inity", ""))
        digits = len(low.removeprefix("0x"))
        if digits > MAX_INT_DIGITS and "." not in low and "e" not in low.removeprefix("0x"):
            raise PrototxtError(
                f"{source}:{line}: integer with {digits} digits is too long (protobuf integers have at most 20)"
            )
        if low.startswith("0x"):
            return int(v, 16)
        if re.fullmatch(r"[-+]?\d+", v):
            return int(v)
        return float(v)
    if kind == "ident":
        if value in ("true", "True"):
            return True
        if value in ("false", "False"):
            return False
        return value
    raise PrototxtError(f"{source}:{line}: expected a value, got {value!r}")


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.toks = list(_tokens(text, source))
        self.i = 0
        self.source = source
        self.depth = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _next(self, what: str) -> tuple[str, str, int]:
        tok = self._peek()
        if tok is None:
            last = self.toks[-1][2] if self.toks else 1
            raise PrototxtError(f"{self.source}:{last}: unexpected end of file, expected {what}")
        self.i += 1
        return tok

    def message(self, closing: str | None) -> Message:
        if self.depth >= MAX_DEPTH:
            line = self.toks[self.i - 1][2] if self.i else 1
            raise PrototxtError(f"{self.source}:{line}: messages nested deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            return self._fields(closing)
        finally:
            self.depth -= 1

    def _fields(self, closing: str | None) -> Message:
        msg = Message()
        while True:
            tok = self._peek()
            if tok is None:
                if closing is not None:
                    raise PrototxtError(f"{self.source}: unexpected end of file, missing {closing!r}")
                return msg
            kind, value, line = tok
            if kind == "punct" and value == closing:
                self.i += 1
                return msg
            if kind == "punct" and value in ",;":
                self.i += 1
                continue
            if kind != "ident":
                raise PrototxtError(f"{self.source}:{line}: expected a field name, got {value!r}")
            self.i += 1
            name = value
            has_colon = False
            nxt = self._peek()
            if nxt is not None and nxt[1] == ":":
                self.i += 1
                has_colon = True
            msg.setdefault(name, []).extend(self._values(name, has_colon))

    def _values(self, name: str, has_colon: bool) -> list[Any]:
        kind, value, line = self._next(f"a value for {name!r}")
        if kind == "punct" and value in "{<":
            return [self.message("}" if value == "{" else ">")]
        if kind == "punct" and value == "[" and has_colon:
            out: list[Any] = []
            while True:
                k, v, ln = self._next("']'")
                if k == "punct" and v == "]":
                    return out
                if k == "punct" and v == ",":
                    continue
                if k == "punct" and v in "{<":
                    out.append(self.message("}" if v == "{" else ">"))
                else:
                    out.append(_scalar(k, v, self.source, ln))
        if not has_colon:
            raise PrototxtError(f"{self.source}:{line}: expected ':' or '{{' after field {name!r}, got {value!r}")
        v = _scalar(kind, value, self.source, line)
        if kind == "str":  # adjacent string literals concatenate
            while (nxt := self._peek()) is not None and nxt[0] == "str":
                self.i += 1
                v += _scalar(*nxt[:2], self.source, nxt[2])
        return [v]


def parse_prototxt(text: str, source: str = "<prototxt>") -> Message:
    """Parse protobuf text-format ``text`` into a :class:`Message` tree."""
    return _Parser(text, source).message(None)


def read_prototxt(path: str | Path) -> Message:
    """Read and parse a ``.prototxt`` file; errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, expected a prototxt file")
    if not path.is_file():
        raise FileNotFoundError(f"prototxt not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PrototxtError(f"{path}: not a text file ({e}); a binary .caffemodel is not a prototxt") from e
    return parse_prototxt(text, str(path))
