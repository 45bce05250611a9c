"""The taxonomy of tracked categories and the frozen grader ids (DESIGN §4)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from depsim.params import ParamsError, load_yaml, validation_error

GROUPS = ("disallowed", "misalignment", "evaluation_awareness", "refusal")


class Examples(BaseModel):
    model_config = ConfigDict(extra="forbid")
    positive: list[str] = []
    negative: list[str] = []


class Category(BaseModel):
    """One tracked category: definition, examples, the baseline flag and its grader spec."""
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    group: Literal["disallowed", "misalignment", "evaluation_awareness", "refusal"]
    baseline: bool
    definition: str
    examples: Examples = Examples()
    grader: dict = Field(description="grader spec: kind (rule), rule name and its settings")

    @property
    def grader_id(self) -> str:
        """Return the frozen grader id: 12 hex chars of the sha256 of the whole grader spec
        (and, for rule graders, the rule's code version)."""
        from depsim.graders import RULE_VERSIONS

        spec = {"category": self.name, **self.grader,
                "rule_version": RULE_VERSIONS.get(self.grader.get("rule"))}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    categories: dict[str, Category]


def load_taxonomy(path: str | Path) -> dict[str, Category]:
    """Return the categories of a taxonomy YAML file, by name, in file order.

    Raises ParamsError (one line, with file and line) on a malformed file or an unknown
    grader rule."""
    from depsim.graders import RULES

    path = Path(path)
    data, node = load_yaml(path)
    try:
        tax = _File(**(data or {}))
    except (ValidationError, TypeError) as e:
        if isinstance(e, TypeError):
            raise ParamsError(f"{path}: expected a mapping with `categories`") from None
        raise validation_error(path, node, e) from None
    for name, cat in tax.categories.items():
        cat.name = name
        rule = cat.grader.get("rule")
        if cat.grader.get("kind") != "rule" or rule not in RULES:
            from depsim.params import _line_of
            raise ParamsError(f"{path}:{_line_of(node, ('categories', name, 'grader'))}: "
                              f"categories.{name}.grader: unknown grader {cat.grader.get('kind')}/{rule} "
                              f"(known rules: {', '.join(RULES)})")
    return tax.categories


def select(taxonomy: dict[str, Category], categories: list[str] | str) -> dict[str, Category]:
    """Return the categories a release tracks ("all", or the listed names in that order)."""
    if categories == "all":
        return dict(taxonomy)
    return {c: taxonomy[c] for c in categories}
