"""``pipeline.STAGE_PARAMS`` is kept by hand; the staleness banner is only as right as it is.
Each stage runs on a small release through a stand-in that records every parameter it reads,
and every read must be a parameter of that stage, of a stage upstream of it (through
``INPUTS``), or one that only changes what a page shows. Covers the paths the small demo-like
release exercises (simulated world, reweighting, realism, history), not every source kind."""
import functools
import inspect

import pytest
from pydantic import BaseModel

from conftest import small_release
from depsim import pipeline
from depsim.params import load_release
from depsim.taxonomy import load_taxonomy


class Spy:
    """Stand-in for a pydantic model: records each field path read through it (``models.grader``)."""

    def __init__(self, real, seen: set, prefix: str = ""):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_seen", seen)
        object.__setattr__(self, "_prefix", prefix)

    @property
    def __class__(self):  # isinstance(spy, Release) holds
        return type(object.__getattribute__(self, "_real"))

    def __getattr__(self, name):
        real, seen, prefix = self._real, self._seen, self._prefix
        cls = type(real)
        if name in cls.model_fields:
            seen.add(prefix + name)
            v = getattr(real, name)
            return Spy(v, seen, prefix + name + ".") if isinstance(v, BaseModel) else v
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, property):
            return attr.fget(self)
        if name in ("model_dump", "model_dump_json"):  # reads the whole section
            seen.add(prefix.rstrip(".") or "*")
            return getattr(real, name)
        if name == "model_copy":
            def copy(update=None, **kw):
                update = {k: unwrap(v) for k, v in (update or {}).items()}
                return Spy(real.model_copy(update=update, **kw), seen, prefix)
            return copy
        if inspect.isfunction(attr):  # methods read their fields through the spy too
            return functools.partial(attr, self)
        return getattr(real, name)


def unwrap(x):
    return object.__getattribute__(x, "_real") if type(x) is Spy else x


def upstream(stage: str) -> set[str]:
    """The stage and every stage whose tables reach its tables through INPUTS."""
    out, todo = {stage}, [t for t, s in pipeline.WRITER.items() if s == stage]
    while todo:
        for t in pipeline.INPUTS[todo.pop()]:
            out.add(pipeline.WRITER[t])
            todo.append(t)
    return out


def unlisted(stage: str, seen: set[str]) -> list[str]:
    """The parameters ``stage`` read that no STAGE_PARAMS entry upstream of it covers."""
    # "taxonomy:a,b" (some categories' specs) covers reading the taxonomy field
    listed = pipeline.DISPLAY_PARAMS | {"release"} | {k.split(":")[0] for s in upstream(stage) for k in pipeline.STAGE_PARAMS[s]}
    # reading `models` on the way to `models.grader` is traversal, not a read of all models
    return sorted(p for p in seen if not any(p == e or p.startswith(e + ".") or e.startswith(p + ".") for e in listed))


def test_every_parameter_a_stage_reads_is_in_its_stage_params(tmp_path, monkeypatch):
    rel = load_release(small_release(tmp_path))
    provenance = pipeline.provenance  # the params hash reads every parameter by design
    monkeypatch.setattr(pipeline, "provenance", lambda r, stage=None: provenance(unwrap(r), stage))
    reports = tmp_path / "reports"
    read = {}
    for stage in pipeline.STAGES:
        read[stage] = set()
        getattr(pipeline, f"run_{stage}")(Spy(rel, read[stage]), reports)
    # the spy sees reads made inside methods and nested sections
    assert {"grading.llm_sample", "sampling.eligibility.languages", "models.grader.base_url"} <= set().union(*read.values())
    assert {s: unlisted(s, seen) for s, seen in read.items()} == {s: [] for s in pipeline.STAGES}
    # and the check can fail: a stage listing nothing has unlisted reads
    monkeypatch.setitem(pipeline.STAGE_PARAMS, "grade", ())
    assert "grading.llm_sample" in unlisted("grade", read["grade"])


@pytest.mark.parametrize("stage", list(pipeline.STAGES))
def test_stage_params_name_real_parameters(stage):
    fields = load_release("params/demo.yaml")
    tax = load_taxonomy("params/taxonomy.yaml")
    for key in pipeline.STAGE_PARAMS[stage]:
        if key.startswith("taxonomy:"):  # categories of the taxonomy
            assert all(c in tax for c in key[9:].split(",")), key
            continue
        head, _, tail = key.partition(".")
        assert head in type(fields).model_fields, key
        if tail:
            section = type(fields).model_fields[head].annotation
            names = set().union(*(getattr(a, "model_fields", {}) for a in getattr(section, "__args__", (section,))))
            assert tail in names, key
