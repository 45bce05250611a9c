"""YAML files with errors that name the file and the line: shared by the release params
(:mod:`depsim.params`) and the taxonomy (:mod:`depsim.taxonomy`)."""
from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError


class ParamsError(ValueError):
    """A params or taxonomy file is invalid; the message names the file and the line."""


def line_of(node: yaml.Node | None, loc: tuple, *, key: bool = False) -> int | None:
    """Return the 1-based line of the YAML node at ``loc`` (deepest node that exists).
    ``key``: when the last step of ``loc`` is a mapping key, the line of that key itself
    rather than of its value (a block mapping's value starts on the next line)."""
    line = node.start_mark.line + 1 if node is not None else None
    for step in loc:
        at = None
        if isinstance(node, yaml.MappingNode):
            k, nxt = next(((k, v) for k, v in node.value if k.value == step), (None, None))
            at = k
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            nxt = node.value[step]
        else:
            nxt = None
        if nxt is None:
            break
        node, line = nxt, ((at if key and at is not None else nxt).start_mark.line + 1)
    return line


def did_you_mean(word: str, choices) -> str:
    """Return `` (did you mean 'x'?)`` for the choice closest to ``word`` (difflib), or ""."""
    close = difflib.get_close_matches(str(word), sorted(map(str, choices)), 1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading floats as YAML 1.2 does: YAML 1.1 wants a dot and a signed
    exponent, so ``4e3``, ``1e-3`` and ``1.5e2`` would otherwise be strings."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                              list("-+0123456789."))


def _duplicate_key(node: yaml.Node | None, loc: tuple = ()) -> tuple[tuple, int, int] | None:
    """Return (key path, first line, repeated line) of the first mapping key that repeats in
    its mapping (lines 1-based), or None. YAML keeps only the last silently."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                line = k.start_mark.line + 1
                if (k.tag, k.value) in seen:
                    return (*loc, k.value), seen[(k.tag, k.value)], line
                seen[(k.tag, k.value)] = line
            if (dup := _duplicate_key(v, (*loc, getattr(k, "value", "?")))) is not None:
                return dup
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            if (dup := _duplicate_key(v, (*loc, i))) is not None:
                return dup
    return None


def load_yaml(path: str | Path) -> tuple[object, yaml.Node | None]:
    """Return (data, node tree) of a YAML file, floats read as in YAML 1.2 (``4e3`` is 4000.0);
    raise ParamsError naming file and line on invalid YAML or a key repeated in a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=_Loader)
        if (dup := _duplicate_key(node)) is not None:
            loc, first, again = dup
            raise ParamsError(f"{path}:{again}: {'.'.join(map(str, loc))}: duplicate key, first at line {first} "
                              f"(YAML would silently keep only the last): keep one")
        return yaml.load(text, Loader=_Loader), node
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None


def _members(tp) -> list:
    """The types a field annotation may hold: unions, Optional and Annotated unwrapped."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _members(a)]
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    return [tp]


def field_names(model: type[BaseModel], loc: tuple) -> set[str]:
    """Return the keys allowed in the mapping at ``loc`` of ``model``'s input: the field names
    and aliases of the model(s) found there (empty when none is)."""
    found = [model]
    for step in loc:
        nxt = []
        for tp in (m for t in found for m in _members(t)):
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                f = tp.model_fields.get(step) if isinstance(step, str) else None
                f = f or next((f for f in tp.model_fields.values() if step in (f.alias, f.validation_alias)), None)
                nxt += [f.annotation] if f is not None else []
            elif origin is dict and len(args) == 2:
                nxt.append(args[1])
            elif origin in (list, tuple, set, frozenset) and args and isinstance(step, int):
                nxt.append(args[0])
        if not nxt and isinstance(step, str):
            continue  # a union member's tag in pydantic's loc (e.g. 'list[str]'): not a key
        found = nxt
    names = set()
    for tp in (m for t in found for m in _members(t)):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            for name, f in tp.model_fields.items():
                names |= {name} | {a for a in (f.alias, f.validation_alias) if isinstance(a, str)}
    return names


def validation_error(path: Path, node, err: ValidationError, model: type[BaseModel] | None = None) -> ParamsError:
    """Return a one-line ParamsError for the first error of a pydantic ValidationError.

    A required key that is missing where an unknown key sits in the same mapping is most
    likely that key misspelt: the unknown key is reported instead, at its own line. An
    unknown key's message suggests the closest allowed key (``model``'s field names and
    aliases at that place, the root model of the validated input; and the missing keys
    beside it)."""
    errors = [{**e, "loc": tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))}
              for e in err.errors()]

    def beside(e: dict, kind: str) -> list[dict]:
        return [x for x in errors if x["type"] == kind and x["loc"][:-1] == e["loc"][:-1] and x["loc"]]

    first = errors[0]
    if first["type"] == "missing" and first["loc"] and (extra := beside(first, "extra_forbidden")):
        missing = [str(x["loc"][-1]) for x in beside(first, "missing")]
        first = next((x for x in extra if difflib.get_close_matches(str(x["loc"][-1]), missing, 1)), extra[0])
    loc = first["loc"]
    field = ".".join(str(x) for x in loc) or "(top level)"
    if first["type"] == "extra_forbidden" and loc:
        names = field_names(model, loc[:-1]) if model is not None else set()
        names |= {str(x["loc"][-1]) for x in beside(first, "missing")}
        msg = "unknown key" + did_you_mean(loc[-1], names)
        line = line_of(node, loc, key=True)
    else:
        msg, line = first["msg"], line_of(node, loc)
    return ParamsError(f"{path}{f':{line}' if line else ''}: {field}: {msg}")
