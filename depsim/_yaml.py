"""YAML files with errors that name the file and the line: shared by the release params
(:mod:`depsim.params`) and the taxonomy (:mod:`depsim.taxonomy`)."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError


class ParamsError(ValueError):
    """A params or taxonomy file is invalid; the message names the file and the line."""


def line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Return the 1-based line of the YAML node at ``loc`` (deepest node that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node, line = nxt, nxt.start_mark.line + 1
    return line


def load_yaml(path: str | Path) -> tuple[object, yaml.Node | None]:
    """Return (data, node tree) of a YAML file; raise ParamsError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None


def validation_error(path: Path, node, err: ValidationError) -> ParamsError:
    """Return a one-line ParamsError for the first error of a pydantic ValidationError."""
    first = err.errors()[0]
    loc = tuple(x for x in first["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    line = line_of(node, loc)
    field = ".".join(str(x) for x in loc) or "(top level)"
    return ParamsError(f"{path}{f':{line}' if line else ''}: {field}: {first['msg']}")
