"""Decoding what the application's Redis holds about a job, with bounds on what the decoding may cost.

Anyone who can write to that Redis writes what the console decodes when someone opens a queue page. Refusing to
run code (queues.rqclient's allowlist of plain-value classes) is not enough: a few bytes can still ask for
terabytes. Each of these is refused before it allocates, with a reason the page shows next to the job:

- stored data larger than MAX_DECODE_BYTES, once inflated (rq zlib-compresses a job's data: 1 MB of zeros
  deflates to 1 kB), read with a bounded inflate;
- a pickle of more than MAX_PICKLE_OPERATIONS operations, one whose memo indices jump (the C unpickler grows its
  memo table to the index it is given), an integer of more than MAX_INTEGER_DIGITS digits, or lengths beyond the
  end of the data: all read from the opcodes (pickletools.genops) before anything is unpickled;
- the allowed classes called with arguments that allocate what they ask: `bytearray(10**12)`,
  `frozenset(range(10**12))`. A pickle builds these only as `bytearray(bytes)`, `bytearray(text, "latin-1")` and
  `set(list)`, which allocate no more than the data holds;
- a decoded value that printing it (the page shows the arguments) would make large: more than MAX_EXPANDED_SIZE
  characters' worth counted as repr walks it (a value referenced twice counts twice: that is how a few memo
  references make a billion), nesting deeper than MAX_NESTING, or a container that holds itself.
"""

from __future__ import annotations

import _compat_pickle
import io
import json
import pickle
import pickletools
import zlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

from dr_console.text import untrusted_text

MAX_DECODE_BYTES = 256 * 1024  # a job's data, meta or result, once inflated
MAX_PICKLE_OPERATIONS = 50_000
MAX_INTEGER_DIGITS = 1000
MAX_EXPANDED_SIZE = 1_000_000
MAX_NESTING = 32

_INTEGER_OPCODES = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})
_MAX_INTEGER_BITS = int(MAX_INTEGER_DIGITS * 3.33)


class DecodeRefused(ValueError):
    """Why the console did not decode a job's stored data, in words for the page (never the data itself)."""


def too_large() -> DecodeRefused:
    return DecodeRefused(_("it is larger than %(size)s") % {"size": filesizeformat(MAX_DECODE_BYTES)})


def inflate(raw: bytes, *, head: bool = False) -> bytes:
    """What rq reads from a stored field: zlib.decompress(raw), or raw itself when it is not zlib data. More than
    MAX_DECODE_BYTES is refused (or, with `head`, cut there) before more than that is inflated."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw, MAX_DECODE_BYTES + 1)
    except zlib.error:
        data = raw
    else:
        if len(data) <= MAX_DECODE_BYTES and not inflater.eof:
            data = raw  # a truncated stream: zlib.decompress raises, and rq keeps the bytes as they are
    if len(data) > MAX_DECODE_BYTES:
        if not head:
            raise too_large()
        data = data[:MAX_DECODE_BYTES]
    return data


def loads(data: bytes) -> Any:
    """A job's data as rq's serializers wrote it: a pickle (protocol 2 or later) of plain values, or JSON.
    Raises DecodeRefused."""
    if len(data) > MAX_DECODE_BYTES:
        raise too_large()
    if data[:1] == b"\x80":  # every pickle protocol >= 2 starts with PROTO
        _check_pickle_operations(data)
        decode: Callable[[], Any] = _PlainValuesUnpickler(io.BytesIO(data)).load
    else:
        decode = lambda: json.loads(data.decode("utf-8"))  # noqa: E731
    try:
        value = decode()
    except DecodeRefused:
        raise
    except Exception:  # any other error of a malformed pickle or JSON document (RecursionError included)
        raise DecodeRefused(_("it is neither JSON nor a well-formed pickle of plain values")) from None
    _check_shape(value)
    return value


def _check_pickle_operations(data: bytes) -> None:
    """Read the pickle's opcodes without running them. genops reads a length-prefixed argument with
    `read(n)`, which returns what is there: a length past the end is an error here, not an allocation."""
    try:
        for count, (opcode, arg, _position) in enumerate(pickletools.genops(data)):
            if count >= MAX_PICKLE_OPERATIONS:
                raise DecodeRefused(
                    _("it holds more than %(count)s pickle operations") % {"count": f"{MAX_PICKLE_OPERATIONS:,}"}
                )
            if opcode.name in _INTEGER_OPCODES and isinstance(arg, int) and arg.bit_length() > _MAX_INTEGER_BITS:
                raise DecodeRefused(
                    _("it holds an integer of more than %(digits)s digits") % {"digits": f"{MAX_INTEGER_DIGITS:,}"}
                )
            if opcode.name in _MEMO_OPCODES and isinstance(arg, int) and arg >= MAX_PICKLE_OPERATIONS:
                raise ValueError("memo index out of range")  # the memo is numbered 0, 1, 2...
    except DecodeRefused:
        raise
    except Exception:  # truncated, unknown opcode, a length beyond the end
        raise DecodeRefused(_("it is neither JSON nor a well-formed pickle of plain values")) from None


def _refused_call(name: str) -> DecodeRefused:
    return DecodeRefused(_("it calls %(name)s() with arguments that could allocate without bound") % {"name": name})


def _bounded_bytearray(*args: Any) -> bytearray:
    """bytearray as pickles build it: from bytes, or from text and its encoding, never from a size or an iterable."""
    if not args or (isinstance(args[0], bytes | str) and len(args) <= 2 and all(isinstance(a, str) for a in args[1:])):
        return bytearray(*args)
    raise _refused_call("bytearray")


def _latin1_encode(*args: Any) -> bytes:
    """_codecs.encode as protocol 2 pickles bytes: (text, "latin1"), which takes a byte a character."""
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")
    raise _refused_call("_codecs.encode")


def _bounded_set(*args: Any) -> set[Any]:
    """set as pickles of protocols 2 and 3 build it: from a list the pickle holds (not from a range)."""
    if not args or (len(args) == 1 and isinstance(args[0], list | tuple)):
        return set(*args)
    raise _refused_call("set")


def _bounded_frozenset(*args: Any) -> frozenset[Any]:
    if not args or (len(args) == 1 and isinstance(args[0], list | tuple)):
        return frozenset(*args)
    raise _refused_call("frozenset")


# Classes a job's arguments may name and still be decoded: plain values only, nothing with behaviour. The four whose
# call allocates what its arguments ask are called through a check of them; a function is not a type, so a
# NEWOBJ of them (cls.__new__(cls, *args), where frozenset would iterate its argument) is refused by pickle.
SAFE_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "set"): _bounded_set,
    ("builtins", "frozenset"): _bounded_frozenset,
    ("builtins", "bytearray"): _bounded_bytearray,
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "complex"): None,
    ("builtins", "range"): None,
    ("builtins", "slice"): None,
    ("datetime", "date"): None,
    ("datetime", "datetime"): None,
    ("datetime", "time"): None,
    ("datetime", "timedelta"): None,
    ("datetime", "timezone"): None,
    ("decimal", "Decimal"): None,
    ("uuid", "UUID"): None,
    ("collections", "OrderedDict"): None,
}


class _PlainValuesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Pickles of protocols 0 to 2 name Python 2's modules (__builtin__.set, __builtin__.xrange); pickle's own
        # find_class maps them, and this one replaces it.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            shown = untrusted_text(f"{module}.{name}")[:200]
            raise DecodeRefused(_("it names %(name)s, which the console never loads") % {"name": shown})
        return SAFE_PICKLE_GLOBALS[module, name] or super().find_class(module, name)


def _children(value: Any) -> list[Any] | None:
    """The values inside a container; None for a value that holds no other."""
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    if isinstance(value, slice):
        return [value.start, value.stop, value.step]
    return None


def _leaf_size(value: Any) -> int:
    if isinstance(value, str | bytes | bytearray):
        return 1 + len(value)
    if isinstance(value, int):
        return 1 + value.bit_length() // 3
    if isinstance(value, Decimal):
        return 1 + len(value.as_tuple().digits)
    return 1


def _check_shape(value: Any) -> None:
    """Refuse a value that is big to walk (see the module's docstring). Each distinct object is looked at once,
    its size and depth kept by id, so the check costs the pickle's own size even when the walk it stands for
    would never end."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (expanded size, nesting)
    walking: set[int] = set()  # the containers between the top and the one being looked at
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, children_done = stack.pop()
        key = id(item)
        if children_done:
            walking.discard(key)
            inside = _children(item) or []
            size = 1 + sum(measured[id(child)][0] for child in inside)
            depth = 1 + max((measured[id(child)][1] for child in inside), default=0)
            if size > MAX_EXPANDED_SIZE:
                raise DecodeRefused(
                    _("its values would print longer than %(count)s characters") % {"count": f"{MAX_EXPANDED_SIZE:,}"}
                )
            if depth > MAX_NESTING:
                raise DecodeRefused(_("its values nest more than %(depth)s deep") % {"depth": MAX_NESTING})
            measured[key] = (size, depth)
            continue
        if key in measured:
            continue
        children = _children(item)
        if children is None:
            measured[key] = (_leaf_size(item), 0)
            continue
        if key in walking:  # met again below itself
            raise DecodeRefused(_("it holds itself"))
        walking.add(key)
        stack.append((item, True))
        stack.extend((child, False) for child in children)
