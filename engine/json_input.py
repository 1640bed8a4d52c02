"""Strict JSON for anything received from outside: RFC 8259 only (no NaN/Infinity), numbers a 64-bit integer or
float holds, bounded nesting."""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Flow documents nest about 6 deep, node configs (rules, JSON schemas) a few more; 64 leaves room for anything real
# while every later step (validation, canonical dump, the answer) stays far from Python's recursion limit.
MAX_JSON_DEPTH = 64


_SURROGATE_TEXT = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonRefused(ValueError):
    """Text that is not strict JSON, or is nested too deep; the message says what and where."""


def _constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not JSON (RFC 8259 has no NaN or Infinity): send a finite number or null")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"the number {text[:40]} is too large for a 64-bit float: send a smaller number")
    return value


def _integer(text: str) -> int:
    value = int(text) if len(text) <= 20 else None  # a longer literal is out of range (and slow to convert)
    if value is None or not -(2**63) <= value < 2**63:
        raise JsonRefused(f"the integer {text[:40]}{'...' if len(text) > 40 else ''} is outside the 64-bit range: "
                          "send a smaller number")  # fmt: skip
    return value


def depth_of(value: Any) -> int:
    """How deep arrays and objects nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(source: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`source` decoded as strict JSON, or JsonRefused saying what is wrong (syntax with line and column, encoding,
    NaN/Infinity, a number beyond 64 bits, nesting deeper than `max_depth`)."""
    try:
        value = json.loads(source, parse_constant=_constant, parse_float=_finite, parse_int=_integer)
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except RecursionError:  # the decoder gives up near Python's recursion limit (~1000 levels)
        raise JsonRefused(f"nested deeper than {max_depth} levels: flatten the document") from None
    if depth_of(value) > max_depth:
        raise JsonRefused(f"nested deeper than {max_depth} levels: flatten the document")
    escaped = _SURROGATE_TEXT.search(source) if isinstance(source, str) else _SURROGATE_BYTES.search(source)
    if escaped:  # half a surrogate pair alone is no character: nothing could store, log or send it
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise JsonRefused("a \\u escape is half a surrogate pair (no character): send the whole pair") from None
    return value
