"""Configurations: the sizes and switches a mechanism's case is built from.

Every registered mechanism declares one frozen dataclass, a subclass of
:class:`Config`, whose fields are declared with :func:`option`: a default (the
registered example), a one-line doc, and a constraint (``minimum``,
``maximum``, ``choices``). Cross-field rules go in :meth:`Config.validate`.
A configuration validates itself when it is made, so every consumer (the case
builder, ``python -m gradients check --config``, ``python -m reference export
--config``, ``compare_torch(..., config=...)``) sees the same errors::

    >>> from reference.registry import get
    >>> mechanism = get("attention.lsh")
    >>> config = mechanism.make_config({"n_hashes": 4, "seq_len": 64})
    >>> case = mechanism.example(0, config=config)

A bad value raises a ``ValueError`` that names the field and its allowed
range; an unknown field raises one that lists the known fields.
"""

from __future__ import annotations

import dataclasses
import numbers
import operator
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

__all__ = ["Config", "option", "parse_assignments"]


def option(default: Any, doc: str, *, minimum: float | None = None, maximum: float | None = None,
           choices: Iterable[Any] | None = None) -> Any:
    """A configuration field: its default, its doc and its constraint."""
    meta = {"doc": doc, "minimum": minimum, "maximum": maximum,
            "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict, set)):
        raise TypeError("configuration defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=meta)


def _constraint_text(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta.get("choices") is not None:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None and high is not None:
        return f"{low} <= value <= {high}"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    return "any"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(cls_name: str, name: str, tp: Any, value: Any) -> Any:
    """``value`` as a value of the field's declared type, or a TypeError naming the field."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if not isinstance(value, bool):
            try:
                return operator.index(value)
            except TypeError:
                pass
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, (tuple, list)):
            return tuple(_coerce(cls_name, f"{name}[{i}]", item, v) for i, v in enumerate(value))
    else:
        return value
    raise TypeError(f"{cls_name}.{name} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class Config:
    """Base class of every mechanism's configuration (a frozen dataclass of :func:`option` fields)."""

    #: What the configuration describes, shown by ``python -m reference list --config NAME``.
    title: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        cls_name = type(self).__name__
        for f in dataclasses.fields(self):
            value = _coerce(cls_name, f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            meta = f.metadata
            allowed = _constraint_text(f)
            if meta.get("choices") is not None and value not in meta["choices"]:
                raise ValueError(f"{cls_name}.{f.name} must be {allowed}, got {value!r}")
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if isinstance(item, (bool, str)):
                    continue
                if meta.get("minimum") is not None and not item >= meta["minimum"]:
                    raise ValueError(f"{cls_name}.{f.name} must be {allowed}, got {value!r}")
                if meta.get("maximum") is not None and not item <= meta["maximum"]:
                    raise ValueError(f"{cls_name}.{f.name} must be {allowed}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Cross-field rules; subclasses raise ``ValueError`` naming the fields involved."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def make(cls, values: "Config | Mapping[str, Any] | None" = None, **changes: Any) -> "Config":
        """A validated configuration from ``None`` (the defaults), a mapping of fields, or an instance."""
        if isinstance(values, Config):
            if not isinstance(values, cls):
                raise TypeError(f"config must be a {cls.__name__} (or a dict of its fields), "
                                f"got {type(values).__name__}")
            values = values.to_dict()
        if values is not None and not isinstance(values, Mapping):
            raise TypeError(f"config must be a dict of fields or a {cls.__name__}, got {type(values).__name__}")
        merged = {**(values or {}), **changes}
        unknown = sorted(set(merged) - set(cls.field_names()))
        if unknown:
            known = ", ".join(cls.field_names()) or "(none: this mechanism has no configuration)"
            raise ValueError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known fields: {known}")
        return cls(**merged)

    def replace(self, **changes: Any) -> "Config":
        """A validated copy with some fields changed."""
        return type(self).make(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field and its value (JSON-ready: tuples become lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> str:
        """A table: each field with its type, default, constraint and doc."""
        hints = typing.get_type_hints(cls)
        rows = [("field", "type", "default", "constraint", "meaning")]
        for f in dataclasses.fields(cls):
            constraint = "True or False" if hints[f.name] is bool else _constraint_text(f)
            rows.append((f.name, _type_name(hints[f.name]), repr(f.default), constraint, f.metadata["doc"]))
        if len(rows) == 1:
            return "(no configuration fields)"
        title = [cls.title[0].upper() + cls.title[1:] + "."] if cls.title else []
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(title + ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows])

    @classmethod
    def parse(cls, assignments: Iterable[str]) -> dict[str, Any]:
        """``["FIELD=VALUE", ...]`` (the command line's ``--config``) as typed field values."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, text in parse_assignments(assignments).items():
            if name not in hints or name not in cls.field_names():
                raise ValueError(f"unknown {cls.__name__} field {name}; known fields: {', '.join(cls.field_names())}")
            values[name] = _from_text(cls.__name__, name, hints[name], text)
        return values


def parse_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` as ``{"a": "1", "b": "x"}``; a malformed item is a ValueError."""
    out: dict[str, str] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--config takes FIELD=VALUE, got {item!r}")
        out[name.strip()] = text.strip()
    return out


def _from_text(cls_name: str, name: str, tp: Any, text: str) -> Any:
    if tp is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{cls_name}.{name} must be true or false, got {text!r}")
    if typing.get_origin(tp) is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        parts = [p for p in text.replace(" ", "").split(",") if p]
        return tuple(_from_text(cls_name, f"{name}[{i}]", item, p) for i, p in enumerate(parts))
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"{cls_name}.{name} must be {tp.__name__}, got {text!r}") from None
    return text
