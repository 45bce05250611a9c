"""The taxonomy of tracked categories and the frozen grader ids (docs/design.md §4)."""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from depsim._yaml import ParamsError, line_of, load_yaml, validation_error
from depsim.rules import RULE_VERSIONS, RULES, spec_problem

GROUPS = ("disallowed", "misalignment", "evaluation_awareness", "refusal")
#: keys an ``{kind: llm}`` grader spec may have
LLM_GRADER_KEYS = {"kind", "params", "response_style"}
#: structured-output modes of an llm grader (auto: probe the endpoint; see depsim.client)
RESPONSE_STYLES = ("auto", "json_schema", "json_object", "prompt")


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
    edge_cases: list[str] = []
    grader: dict = Field(description="grader spec: kind (rule or llm) and its settings")

    @property
    def is_llm(self) -> bool:
        """True when an LLM grader (``models.grader``) grades this category."""
        return self.grader.get("kind") == "llm"

    @property
    def grader_id(self) -> str:
        """Return the frozen id of a rule grader: 12 hex chars of the sha256 of the whole
        grader spec and the rule's code version. An LLM grader's id also depends on the grader
        model: use :func:`depsim.grade.grader_id`."""
        if self.is_llm:
            raise ValueError(f"{self.name}: an LLM grader's id depends on its model; use depsim.grade.grader_id")
        # sim_only declares where the rule applies; it does not change what the rule does
        spec = {"category": self.name, **{k: v for k, v in self.grader.items() if k != "sim_only"},
                "rule_version": RULE_VERSIONS.get(self.grader.get("rule"))}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = 1
    categories: dict[str, Category]


def load_taxonomy(path: str | Path) -> dict[str, Category]:
    """Return the categories of a taxonomy YAML file, by name, in file order.

    Raises ParamsError (one line, with file and line) on a malformed file, an unknown grader
    rule, or a rule grader spec its rule cannot apply (:func:`depsim.rules.spec_problem`: an
    unknown or missing key, a regex that does not compile)."""
    path = Path(path)
    data, node = load_yaml(path)
    try:
        tax = _File(**(data or {}))
    except (ValidationError, TypeError) as e:
        if isinstance(e, TypeError):
            raise ParamsError(f"{path}: expected a mapping with `categories`") from None
        raise validation_error(path, node, e, _File) from None
    for name, cat in tax.categories.items():
        cat.name = name
        where = f"{path}:{line_of(node, ('categories', name, 'grader'))}: categories.{name}.grader"
        kind, rule = cat.grader.get("kind"), cat.grader.get("rule")
        if kind == "llm":
            extra = set(cat.grader) - LLM_GRADER_KEYS
            style = cat.grader.get("response_style", "auto")
            if extra or style not in RESPONSE_STYLES or not isinstance(cat.grader.get("params", {}), dict):
                raise ParamsError(f"{where}: an llm grader takes only {', '.join(sorted(LLM_GRADER_KEYS))} "
                                  f"(params: a mapping; response_style: {', '.join(RESPONSE_STYLES)})")
        elif kind != "rule" or rule not in RULES:
            close = difflib.get_close_matches(str(rule), list(RULES), 1) if kind == "rule" else []
            raise ParamsError(f"{where}: unknown grader {kind}/{rule}" + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f" (kinds: rule, llm; known rules: {', '.join(RULES)})")
        elif problem := spec_problem(cat.grader):
            # checked here, not when grading: `depsim check` and every stage stop at the file's own line
            field, why = problem
            line = line_of(node, ("categories", name, "grader", field), key=True)
            raise ParamsError(f"{path}:{line}: categories.{name}.grader.{field}: {why}")
    return tax.categories


def select(taxonomy: dict[str, Category], categories: list[str] | str) -> dict[str, Category]:
    """Return the categories a release tracks ("all", or the listed names in that order)."""
    if categories == "all":
        return dict(taxonomy)
    return {c: taxonomy[c] for c in categories}


def for_release(rel) -> dict[str, Category]:
    """Return the categories a release tracks, in taxonomy order, with the graders it uses:
    those named in ``grading.llm`` (or all) switched to their LLM rubric (``{kind: llm}``)."""
    cats = select(load_taxonomy(rel.resolve(rel.taxonomy)), rel.categories)
    switch = rel.grading.llm
    return {n: c if c.is_llm or (switch != "all" and n not in switch) else c.model_copy(update={"grader": {"kind": "llm"}})
            for n, c in cats.items()}
