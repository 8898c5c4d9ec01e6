"""The canonical encoding of a state without the intermediate dicts: generated code per state class.

`canonical.encode_state` is JSON of the converter's unstructured state. Every tick's checksum is
taken over it, so it costs on every live tick and every replayed one; most of that cost is the
unstructured copy and formatting floats. For the common shape of a state (attrs classes whose
fields are numbers, strings, booleans, None, other such classes, and lists and string-keyed dicts
of them) this module writes Python code per class that produces the same text directly, and
keeps the text of recently formatted floats (positions repeat). The elements of a dict or a list
of a class whose fields are all scalars (a player, a unit) are written in the loop over them, not
by a call each: in this interpreter a call costs about as much as writing a few fields.

Same text, by construction: a class is compiled only if the converter would unstructure it with
its generated hook (no custom hook, no init=False field), every field's annotation is one whose
unstructuring this code repeats exactly, and at run time every value must be of an exact type
this code writes as the standard `json` module does (a float is written with `float.__repr__`, an
int as an f-string writes an exact int, which is `int.__repr__`, a string with
`json.encoder.encode_basestring`). Anything else raises
`Fallback`, and the caller encodes that state the reference way. tests/gameserver/test_canonical_fast.py
checks the equality with hypothesis. Never imports trio or sqlite3.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

import attrs
from cattrs.fns import identity

# Formatted floats kept (all threads share them); emptied when full. 65,536 held up to 10 MB at 100
# arena matches and replayed no faster.
FLOAT_TEXTS = 8192


class Fallback(Exception):
    """A value the generated code does not write: encode this state the reference way."""


class _NotCompiled(Exception):
    """A class or annotation outside what this module compiles."""


_float_texts: dict[float, str] = {}
_float_repr = float.__repr__
_int_repr = int.__repr__


def _fallback() -> str:
    raise Fallback


def scalar(value: Any) -> str:
    """A field annotated float, int, str or bool (or None with one of them), written as json does:
    the converter passes such values through unchanged, whatever their type."""
    kind = type(value)
    if kind is float:
        text = _float_texts.get(value)
        if text is None:
            if value - value != 0.0:  # inf or nan: the reference path raises its own error
                raise Fallback
            text = _float_repr(value)
            if value != 0.0:  # 0.0 and -0.0 are one key with two texts
                if len(_float_texts) >= FLOAT_TEXTS:
                    _float_texts.clear()
                _float_texts[value] = text
        return text
    if kind is int:
        return _int_repr(value)
    if kind is str:
        return encode_basestring(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    raise Fallback


_SCALARS = (float, int, str, bool)


class _Compiler:
    def __init__(self, converter: Any):
        self.converter = converter
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"_scalar": scalar, "_ebs": encode_basestring, "_fallback": _fallback,
                                          "_Fallback": Fallback, "_float_texts_get": _float_texts.get, "_repr": repr}
        self.classes: dict[type, str] = {}
        self.classes_by_name: dict[str, type] = {}
        self.kinds: dict[type, list[str]] = {}  # per class, per field: FLOAT, INT, STR, or the name of its writer
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"_{prefix}{self.count}"

    def is_scalar(self, annotation: Any) -> bool:
        if annotation in _SCALARS:
            return self.converter.get_unstructure_hook(annotation) is identity
        if typing.get_origin(annotation) in (typing.Union, _UnionType):
            args = typing.get_args(annotation)
            if len(args) == 2 and type(None) in args:
                other = args[0] if args[1] is type(None) else args[1]
                return other in _SCALARS and self.converter.get_unstructure_hook(other) is identity
        return False

    def value(self, annotation: Any) -> str:
        """The name of a function writing a value of this annotation (its runtime type checked)."""
        if self.is_scalar(annotation):
            return "_scalar"
        if attrs.has(annotation) and isinstance(annotation, type):
            return self.checked_class(annotation)
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is dict and len(args) == 2 and args[0] is str:
            return self.mapping(args[1])
        if origin is list and len(args) == 1:
            return self.sequence(args[0])
        raise _NotCompiled(f"{annotation!r}")

    def checked_class(self, cls: type) -> str:
        function = self.klass(cls)
        name = self.name("checked")
        self.namespace[f"{name}_cls"] = cls
        self.lines += [f"def {name}(v):",
                       f"    if type(v) is not {name}_cls: raise _Fallback",
                       f"    return {function}(v)"]
        return name

    def element(self, annotation: Any) -> tuple[str, str]:
        """(a function writing one element of this annotation, the condition on `e` it needs): for
        a class, the exact type is checked in the loop rather than by a wrapper per element."""
        if attrs.has(annotation) and isinstance(annotation, type) and not self.is_scalar(annotation):
            function = self.klass(annotation)
            self.namespace[f"{function}_cls"] = annotation
            return function, f"type(e) is {function}_cls"
        return self.value(annotation), "True"

    def flat(self, annotation: Any) -> str | None:
        """The writer of a class whose fields are all scalars (its elements are written inline, in
        the loop over a dict's or a list's values, rather than by a call each), else None."""
        if not (attrs.has(annotation) and isinstance(annotation, type)) or self.is_scalar(annotation):
            return None
        function = self.klass(annotation)
        kinds = self.kinds.get(annotation)
        if kinds is None or not all(kind in _SCALAR_KINDS for kind in kinds):
            return None  # a field of its own writer, or a class still being compiled (a recursive one)
        self.namespace[f"{function}_cls"] = annotation
        return function

    def mapping(self, annotation: Any) -> str:
        name = self.name("mapping")
        function = self.flat(annotation)
        if function is not None:
            cls = self.classes_by_name[function]
            lines, text = self.fields(cls, "e", "        ")
            self.lines += [f"def {name}(v):",
                           "    if type(v) is not dict: raise _Fallback",
                           "    parts = []",
                           "    for k, e in v.items():",
                           f"        if type(k) is not str or type(e) is not {function}_cls: raise _Fallback",
                           *lines,
                           f"        parts.append(f'{{_ebs(k)}}:' {text})",
                           "    return '{' + ','.join(parts) + '}'"]
            return name
        function, condition = self.element(annotation)
        self.lines += [f"def {name}(v):",
                       "    if type(v) is not dict: raise _Fallback",
                       f"    return '{{' + ','.join([_ebs(k) + ':' + {function}(e) if type(k) is str and {condition} "
                       "else _fallback() for k, e in v.items()]) + '}'"]
        return name

    def sequence(self, annotation: Any) -> str:
        name = self.name("list")
        function = self.flat(annotation)
        if function is not None:
            cls = self.classes_by_name[function]
            lines, text = self.fields(cls, "e", "        ")
            self.lines += [f"def {name}(v):",
                           "    if type(v) is not list: raise _Fallback",
                           "    parts = []",
                           "    for e in v:",
                           f"        if type(e) is not {function}_cls: raise _Fallback",
                           *lines,
                           f"        parts.append({text})",
                           "    return '[' + ','.join(parts) + ']'"]
            return name
        function, condition = self.element(annotation)
        self.lines += [f"def {name}(v):",
                       "    if type(v) is not list: raise _Fallback",
                       f"    return '[' + ','.join([{function}(e) if {condition} else _fallback() for e in v]) + ']'"]
        return name

    def klass(self, cls: type) -> str:
        """The function writing an instance of `cls` (its type already checked)."""
        if cls in self.classes:
            return self.classes[cls]
        hook = self.converter.get_unstructure_hook(cls)
        if getattr(hook, "__name__", None) != f"unstructure_{cls.__name__}":
            raise _NotCompiled(f"{cls!r} has an unstructure hook of its own")
        fields = attrs.fields(cls)
        if any(not field.init for field in fields):
            raise _NotCompiled(f"{cls!r} has a field the converter leaves out")
        try:
            hints = typing.get_type_hints(cls)
        except Exception as error:  # unresolved names: the converter would fail the same way or differently
            raise _NotCompiled(f"{cls!r}: {error}") from None
        name = self.name(f"class_{cls.__name__}_")
        self.classes[cls] = name
        self.classes_by_name[name] = cls
        kinds = []
        for field in fields:
            annotation = hints.get(field.name, field.type)
            if annotation in (float, int, str) and self.is_scalar(annotation):
                kinds.append({float: _FLOAT, int: _INT, str: _STR}[annotation])
            else:
                kinds.append(self.value(annotation))
        self.kinds[cls] = kinds
        lines, text = self.fields(cls, "o", "    ")
        self.lines += [f"def {name}(o):", *lines, f"    return {text}"]
        return name

    def fields(self, cls: type, obj: str, indent: str) -> tuple[list[str], str]:
        """(the lines computing the texts of the fields of `obj`, an instance of `cls`, and the
        f-string joining them: one f-string, one join)."""
        lines, parts = [], []
        fields = attrs.fields(cls)
        for i, (field, kind) in enumerate(zip(fields, self.kinds[cls])):
            value = f"{obj}.{field.name}"
            if kind == _FLOAT:  # a text is never empty: `or` falls through on None only. 0.0 and -0.0 are
                # one key, so zeros are never kept: repr writes them (as json does, float.__repr__)
                lines += [f"v{i} = {value}",
                          f"s{i} = type(v{i}) is float and (_float_texts_get(v{i}) or v{i} == 0.0 and _repr(v{i}))"
                          f" or _scalar(v{i})"]
            elif kind == _INT:  # the int itself: the f-string writes an exact int as str() does, as json does
                lines += [f"v{i} = {value}", f"s{i} = v{i} if type(v{i}) is int else _scalar(v{i})"]
            elif kind == _STR:
                lines += [f"v{i} = {value}", f"s{i} = _ebs(v{i}) if type(v{i}) is str else _scalar(v{i})"]
            else:
                lines.append(f"s{i} = {kind}({value})")
            parts += [_literal(("{" if i == 0 else ",") + encode_basestring(field.name) + ":"), f"f'{{s{i}}}'"]
        parts.append(_literal("}" if fields else "{}"))
        return [indent + line for line in lines], " ".join(parts)


_FLOAT, _INT, _STR = "float", "int", "str"
_SCALAR_KINDS = (_FLOAT, _INT, _STR, "_scalar")


_UnionType = type(int | None)


def _literal(text: str) -> str:
    """`text` as an f-string literal (adjacent ones are joined by the compiler into one string)."""
    return "f" + repr(text.replace("{", "{{").replace("}", "}}"))


def compile_encoder(cls: type, converter: Any) -> Callable[[Any], str] | None:
    """A function writing an instance of `cls` as `json` would write its unstructured form (it
    raises `Fallback` for a value it does not write), or None if `cls` is outside what it compiles."""
    if not (isinstance(cls, type) and attrs.has(cls)) or cls.__name__.isidentifier() is False:
        return None
    compiler = _Compiler(converter)
    try:
        name = compiler.klass(cls)
    except _NotCompiled:
        return None
    if not all(field.name.isidentifier() for c in compiler.classes for field in attrs.fields(c)):
        return None
    source = "\n".join(compiler.lines)
    exec(compile(source, f"<canonical encoder of {cls.__qualname__}>", "exec"), compiler.namespace)
    return compiler.namespace[name]
