"""Bad parameters get a one-line error that names the file and the line."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from depsim.params import Endpoint, ParamsError, load_release, unset_api_keys

DEMO = Path("params/demo.yaml").read_text()


def write(tmp_path, text, name="rel.yaml"):
    for fname in ("taxonomy.yaml", "history.csv"):
        (tmp_path / fname).write_text(Path("params", fname).read_text())
    shutil.copytree(Path("params", "validation"), tmp_path / "validation", dirs_exist_ok=True)
    p = tmp_path / name
    p.write_text(text)
    return p


def test_demo_params_are_valid():
    rel = load_release("params/demo.yaml")
    assert rel.release == "demo" and rel.simulated


@pytest.mark.parametrize("edit, expect", [
    (lambda s: s.replace("categories: all", "categories: [hate, not_a_category]"), r"rel.yaml:\d+: unknown category 'not_a_category'"),
    (lambda s: s.replace("n: 4000", "n: -3"), r"rel.yaml:\d+: sampling.n: Input should be greater than 0"),
    (lambda s: s.replace("tool_mode: simulate", "tool_mode: magic"), r"rel.yaml:\d+: generation.tool_mode"),
    (lambda s: s.replace("deid: true", "deid: true\nsurprise: 1"), r"rel.yaml:\d+: surprise: unknown key$"),
    (lambda s: s.replace("taxonomy: taxonomy.yaml", "taxonomy: missing.yaml"), r"rel.yaml:\d+: taxonomy: file not found: .*missing.yaml"),
    (lambda s: s.replace("previous: {kind: sim_world, deployment: Y}", "previous: {kind: parquet, path: nowhere.parquet}"),
     r"rel.yaml:\d+: sources.previous.path: file not found"),
    (lambda s: s + "\n  bad: [unclosed\n", r"rel.yaml:\d+: invalid YAML"),
])
def test_bad_params_one_line_error(tmp_path, edit, expect):
    p = write(tmp_path, edit(DEMO))
    with pytest.raises(ParamsError, match=expect) as e:
        load_release(p)
    assert "\n" not in str(e.value)


def _line(text: str, start: str) -> int:
    """The 1-based line of ``text`` that starts with ``start``."""
    return next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith(start))


@pytest.mark.parametrize("old, new, message", [
    # a required key misspelt: the typo at its own line, not "sampling: Field required" at line 3
    ("sampling:", "sampeling:", "sampeling: unknown key (did you mean 'sampling'?)"),
    ("  previous: {kind: sim_world", "  previous: {knd: sim_world", "sources.previous.knd: unknown key (did you mean 'kind'?)"),
    # an optional key misspelt
    ("  max_tokens: 512", "  max_tokns: 512", "generation.max_tokns: unknown key (did you mean 'max_tokens'?)"),
    ("  candidate: {base_url", "  candidate: {api_kee_env: MY_KEY, base_url",
     "models.candidate.api_kee_env: unknown key (did you mean 'api_key_env'?)"),
])
def test_a_misspelt_key_is_named_at_its_line_with_a_suggestion(tmp_path, old, new, message):
    text = DEMO.replace("\n" + old, "\n" + new, 1)
    assert text != DEMO
    p = write(tmp_path, text)
    with pytest.raises(ParamsError) as e:
        load_release(p)
    assert str(e.value) == f"{p}:{_line(text, new)}: {message}"


def test_depsim_check_names_a_misspelt_required_key(tmp_path):
    text = DEMO.replace("\nsampling:", "\nsampeling:")
    p = write(tmp_path, text, name="typo1.yaml")
    r = subprocess.run([sys.executable, "-m", "depsim.cli", "check", str(p), "--no-data"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"depsim: error: {p}:{_line(text, 'sampeling:')}: sampeling: unknown key (did you mean 'sampling'?)"


def test_a_misspelt_taxonomy_key_is_named_at_its_line_with_a_suggestion(tmp_path):
    from depsim.taxonomy import load_taxonomy
    text = Path("params/taxonomy.yaml").read_text()
    typo = text.replace("    definition:", "    definiton:", 1)
    assert typo != text
    (tmp_path / "taxonomy.yaml").write_text(typo)
    with pytest.raises(ParamsError) as e:
        load_taxonomy(tmp_path / "taxonomy.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'taxonomy.yaml'}:{_line(typo, '    definiton:')}: categories.")
    assert str(e.value).endswith(".definiton: unknown key (did you mean 'definition'?)")


def test_unknown_category_line_number(tmp_path):
    p = write(tmp_path, DEMO.replace("categories: all", "categories:\n  - hate\n  - nope"))
    line = next(i for i, l in enumerate(p.read_text().splitlines(), 1) if "- nope" in l)
    with pytest.raises(ParamsError, match=rf"rel.yaml:{line}: unknown category 'nope'"):
        load_release(p)


def test_cli_prints_one_line_and_no_traceback(tmp_path):
    for args in (["run", str(tmp_path / "absent.yaml")],
                 ["run", str(write(tmp_path, DEMO.replace("categories: all", "categories: [nope]")))]):
        r = subprocess.run([sys.executable, "-m", "depsim.cli", *args], capture_output=True, text=True)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("depsim: error: ")


@pytest.mark.parametrize("gate, message", [
    ("  no_such_thing: {max_rate: 1.0e-3}", "gates: 'no_such_thing' is neither a category nor a group"),
    ("  hate: {max_rate: 1.0e-3, max_ratio: 2}", "exactly one of max_rate or max_ratio"),
    ("  hate: {max_rate: 2}", "max_rate"),
])
def test_bad_gates_name_the_line(tmp_path, gate, message):
    text = DEMO.replace("gates:\n  disallowed: {max_ratio: 1.5}", "gates:\n" + gate)
    p = write(tmp_path, text)
    with pytest.raises(ParamsError) as e:
        load_release(p)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l == gate)
    assert message in str(e.value) and f"rel.yaml:{line}" in str(e.value), str(e.value)


def test_rules_that_read_only_the_simulated_world_are_refused_for_a_real_candidate(tmp_path):
    """A real candidate model graded by rules that match only the simulated world's markers
    would report silent zeros: `depsim check` refuses it in one line that says what to set,
    and accepts it once grading.llm sends those categories to their LLM rubrics."""
    real = DEMO.replace('candidate: {base_url: "sim://world/resample", model: sim-x}',
                        'candidate: {base_url: "http://127.0.0.1:9/v1", model: my-model}')
    p = write(tmp_path, real)
    with pytest.raises(ParamsError, match=r"rel.yaml:\d+: target\(s\) sim, sim_self, challenging hold real responses, "
                                          r"but \d+ categories .* read only the simulated world's markers"):
        load_release(p)
    r = subprocess.run([sys.executable, "-m", "depsim.cli", "check", str(p), "--no-data"], capture_output=True, text=True)
    assert r.returncode == 2 and "grading.llm" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # sent to their LLM rubrics, but on the simulated grader: still blind to real text
    llm_all = real.replace("grading:\n", "grading:\n  llm: all\n", 1)
    with pytest.raises(ParamsError, match=r"graded by the simulated grader, .*give a real models.grader"):
        load_release(write(tmp_path, llm_all, name="llm.yaml"))
    fixed = write(tmp_path, llm_all.replace('grader: {base_url: "sim://world/resample", model: sim-grader}',
                                            'grader: {base_url: "http://127.0.0.1:9/v1", model: my-grader}'),
                  name="fixed.yaml")
    assert load_release(fixed).grading.llm == "all"
    load_release(write(tmp_path, DEMO, name="demo.yaml"))  # the simulated candidate keeps its rules


def test_simulated_graders_are_refused_for_real_post_release_traffic(tmp_path):
    """The candidate's real post-release logs (target prod_new) graded by the simulated
    world's rules would be scored as realised zeros: refused, naming the target."""
    (tmp_path / "after.jsonl").write_text('{"id": "c1", "messages": [{"role": "user", "content": "hi"}, '
                                         '{"role": "assistant", "content": "hello"}]}\n')
    text = DEMO.replace("candidate: {kind: sim_world, deployment: X}", "candidate: {kind: openai_jsonl, path: after.jsonl}")
    assert text != DEMO
    with pytest.raises(ParamsError, match=r"target\(s\) prod_new hold real responses, but \d+ categories"):
        load_release(write(tmp_path, text))


VALIDATION_LINE = "  validation: [validation/over_refusal_xstest.csv]"


@pytest.mark.parametrize("table, message", [
    (None, "file not found"),
    ("category,grader_id,source,n\nover_refusal,abc,all,10\n", "not a validation table"),
    ("category,grader_id,source,n,n_pos,n_neg,kappa,sensitivity,specificity\n"
     "over_refusal,abc,a,10,5,5,0.8,0.9,0.9\n", "no pooled row"),
    ("category,grader_id,source,n,n_pos,n_neg,kappa,sensitivity,specificity\n"
     "over_refusal,abc,a,10,5,5,0.8,0.9,0.9\nover_refusal,abc,all,10,5,5,0.8,1.3,0.9\n", "row 3: sensitivity '1.3' is not in [0, 1]"),
    ("category,grader_id,source,n,n_pos,n_neg,kappa,sensitivity,specificity\n"
     "no_such_category,abc,all,10,5,5,0.8,0.9,0.9\n", "category 'no_such_category' is not in taxonomy.yaml"),
    ("not,a\ntable", "not a validation table"),
])
def test_bad_validation_on_record_names_params_line_and_table(tmp_path, table, message):
    """grading.validation: each table is read when the params are checked; a missing or bad one
    is one line naming the params file and line, and the table file (and row)."""
    text = DEMO.replace(VALIDATION_LINE, "  validation: [mine.csv]")
    assert text != DEMO
    p = write(tmp_path, text)
    if table is not None:
        (tmp_path / "mine.csv").write_text(table)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "mine.csv" in l)
    with pytest.raises(ParamsError) as e:
        load_release(p)
    assert f"rel.yaml:{line}: grading.validation" in str(e.value) and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_validation_bars_per_category_or_group(tmp_path):
    text = DEMO.replace(VALIDATION_LINE, VALIDATION_LINE + "\n  bar: {kappa: 0.7}\n  bars: {refusal: {sensitivity: 0.9, "
                        "kappa: null}, hate: {kappa: 0.9}}\n  failed_warn: 0.05")
    rel = load_release(write(tmp_path, text))
    g = rel.grading
    assert g.bar_of("over_refusal", "refusal").sensitivity == 0.9 and g.bar_of("over_refusal", "refusal").kappa is None
    assert g.bar_of("hate", "disallowed").kappa == 0.9 and g.bar_of("self_harm", "disallowed").kappa == 0.7
    assert g.failed_warn == 0.05 and g.validation == ["validation/over_refusal_xstest.csv"]
    bad = text.replace("hate: {kappa: 0.9}", "nope: {kappa: 0.9}")
    with pytest.raises(ParamsError, match=r"rel.yaml:\d+: grading.bars: 'nope' is neither a category nor a group"):
        load_release(write(tmp_path, bad))
    with pytest.raises(ParamsError, match=r"rel.yaml:\d+: grading.bar.kappa"):
        load_release(write(tmp_path, text.replace("bar: {kappa: 0.7}", "bar: {kappa: 1.7}")))


def test_unset_api_keys_name_each_variable_and_the_models_that_need_it():
    rel = load_release("params/example-openai.yaml")
    line = ("environment variable OPENAI_API_KEY is not set or empty: it holds the API key of "
            "models.candidate (gpt-4.1-mini), models.grader (gpt-4.1)")
    assert unset_api_keys(rel, {}) == unset_api_keys(rel, {"OPENAI_API_KEY": ""}) == [line]
    assert unset_api_keys(rel, {"OPENAI_API_KEY": "sk-test"}) == []
    # one line per variable
    auditor = rel.models.auditor.model_copy(update={"api_key_env": "VLLM_KEY"})
    two = rel.model_copy(update={"models": rel.models.model_copy(update={"auditor": auditor})})
    assert unset_api_keys(two, {}) == [line, "environment variable VLLM_KEY is not set or empty: it holds the API key "
                                             "of models.auditor (meta-llama/Llama-3.1-8B-Instruct)"]
    # a role the run does not call is not checked: a judge without the realism check, a
    # previous-production model when prod_prev is not forecast
    other = Endpoint(base_url="https://llm.example.com/v1", model="o", api_key_env="OTHER_KEY")
    idle = rel.model_copy(update={"models": rel.models.model_copy(update={"judge": other, "previous_production": other})})
    assert unset_api_keys(idle, {"OPENAI_API_KEY": "sk-test"}) == []
    busy = idle.model_copy(update={"targets": [*rel.targets, "prod_prev"]})
    assert unset_api_keys(busy, {"OPENAI_API_KEY": "sk-test"}) == [
        "environment variable OTHER_KEY is not set or empty: it holds the API key of models.previous_production (o)"]
    # simulated (in-process) models are never checked, even when they name a variable
    demo = load_release("params/demo.yaml")
    sim = demo.model_copy(update={"models": demo.models.model_copy(update={
        "candidate": demo.models.candidate.model_copy(update={"api_key_env": "SIM_KEY"})})})
    assert unset_api_keys(demo, {}) == unset_api_keys(sim, {}) == []
    # the summary's "who played each role" lists the same roles, simulated ones included
    from depsim.pipeline import roles
    assert roles(idle)["role"].tolist() == ["candidate", "auditor", "grader"]
    assert roles(busy)["role"].tolist() == ["candidate", "auditor", "grader", "previous production"]
    assert "tool simulator" in roles(demo)["role"].tolist() and "judge" in roles(demo)["role"].tolist()


def test_a_gate_on_a_category_the_release_does_not_track_is_refused(tmp_path):
    """categories: narrowed to three, the self_harm gate (and the misalignment group's, with
    none of its categories left) would never be checked: named at their lines."""
    text = DEMO.replace("categories: all", "categories: [violent_wrongdoing, hate, over_refusal]")
    with pytest.raises(ParamsError) as e:
        load_release(write(tmp_path, text))
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("  self_harm: {max_rate"))
    assert f"rel.yaml:{line}: gates: 'self_harm' is not among the categories this release tracks" in str(e.value)
    text = text.replace("  self_harm: {max_rate: 2.0e-3}\n", "")
    with pytest.raises(ParamsError, match=r"gates: 'misalignment' is not among the categories"):
        load_release(write(tmp_path, text))
    ok = text.replace("  misalignment: {max_ratio: 2.0}\n", "")
    assert set(load_release(write(tmp_path, ok)).gates) == {"disallowed", "over_refusal"}


# --- duplicate keys, YAML 1.2 floats, errors that say what was meant -----------------------------

@pytest.mark.parametrize("old, new, key", [
    # a second gate on the same category: the last one (looser) would silently win
    ("  self_harm: {max_rate: 2.0e-3}\n", "  self_harm: {max_rate: 2.0e-3}\n  self_harm: {max_rate: 1.0e-2}\n",
     "gates.self_harm"),
    # a second top-level section: its absent `validation` would silently drop the one on record
    ("report:\n", "grading:\n  llm_sample: 50\n\nreport:\n", "grading"),
])
def test_a_duplicate_key_names_the_file_the_key_and_both_lines(tmp_path, old, new, key):
    assert DEMO.count(old) == 1
    text = DEMO.replace(old, new)
    p = write(tmp_path, text)
    name = key.split(".")[-1] + ":"
    first, again = [i for i, l in enumerate(text.splitlines(), 1) if l.strip().startswith(name)]
    with pytest.raises(ParamsError) as e:
        load_release(p)
    assert str(e.value) == (f"{p}:{again}: {key}: duplicate key, first at line {first} "
                            f"(YAML would silently keep only the last): keep one")


def test_a_taxonomy_category_pasted_twice_is_refused(tmp_path):
    """A pasted category named like a shipped one would replace it silently."""
    text = Path("params/taxonomy.yaml").read_text()
    first = _line(text, "  over_refusal:")
    text += "  over_refusal:\n    group: misalignment\n    baseline: false\n    definition: x\n    grader: {kind: llm}\n"
    p = write(tmp_path, DEMO)
    (tmp_path / "taxonomy.yaml").write_text(text)
    again = len(text.splitlines()) - 4
    with pytest.raises(ParamsError) as e:
        load_release(p)
    assert str(e.value).startswith(f"{tmp_path / 'taxonomy.yaml'}:{again}: categories.over_refusal: duplicate key, "
                                   f"first at line {first} ")


@pytest.mark.parametrize("value, expect", [("4e3", 4000), ("4.0e3", 4000), ("4000.0", 4000), ("+4E3", 4000)])
def test_exponent_floats_read_as_numbers_and_whole_ones_fit_integer_fields(tmp_path, value, expect):
    """YAML 1.1 reads `4e3` (no dot, or an unsigned exponent) as a string; depsim reads floats as
    YAML 1.2 does, and an integer field takes a whole float."""
    text = DEMO.replace("  n: 4000 ", f"  n: {value} ")
    assert text != DEMO
    rel = load_release(write(tmp_path, text))
    assert rel.sampling.n == expect and isinstance(rel.sampling.n, int)


def test_exponent_floats_in_float_fields_and_fractions_in_integer_fields(tmp_path):
    text = DEMO.replace("self_harm: {max_rate: 2.0e-3}", "self_harm: {max_rate: 2e-3}").replace(
        "  llm_sample: 200 ", "  llm_sample: 1.5e2 ")
    rel = load_release(write(tmp_path, text))
    assert rel.gates["self_harm"].max_rate == 2e-3 and rel.grading.llm_sample == 150
    for bad in ("1.5", "1.5e0", "15e-1"):
        with pytest.raises(ParamsError, match=r"sampling.n: Input should be a valid integer, got a number with a "
                                              r"fractional part"):
            load_release(write(tmp_path, DEMO.replace("  n: 4000 ", f"  n: {bad} ")))


def test_depsim_yaml_floats_follow_yaml_1_2(tmp_path):
    import yaml
    from depsim._yaml import load_yaml

    def read(text):
        (tmp_path / "x.yaml").write_text(f"x: {text}\n")
        return load_yaml(tmp_path / "x.yaml")[0]["x"]
    for text, value in [("4e3", 4000.0), ("1e-3", 1e-3), ("-2E5", -2e5), ("1.5e2", 150.0), (".5e1", 5.0)]:
        assert read(text) == value and yaml.safe_load(f"x: {text}")["x"] == text  # YAML 1.1: a string
    for text in ("1e", "e3", "12ab34e5", "4000", "1_000", "2026-01-01"):  # not such floats: read as before
        assert read(text) == yaml.safe_load(f"x: {text}")["x"]


def test_params_comments_name_report_level_as_the_gates_level():
    """Gates are checked at report.level (depsim.forecast.decision_table): a comment must not
    fix the level at 95%."""
    for f in Path("params").glob("*.yaml"):
        text = f.read_text()
        for block in text.split("\n\n"):
            comment = " ".join(l for l in block.splitlines() if l.lstrip().startswith("#"))
            if "upper bound" in comment:
                assert "report.level" in comment and "95%" not in comment, (f, comment)


def test_a_gate_on_a_misspelt_category_suggests_the_category(tmp_path):
    text = DEMO.replace("  self_harm: {max_rate", "  selfharm: {max_rate")
    p = write(tmp_path, text)
    with pytest.raises(ParamsError) as e:
        load_release(p)
    assert str(e.value) == (f"{p}:{_line(text, '  selfharm:')}: gates: 'selfharm' is neither a category nor a group "
                            f"of taxonomy.yaml (did you mean 'self_harm'?)")


@pytest.mark.parametrize("old, new, message", [
    ("  over_refusal: {max_rate: 1.0e-2}", "  over_refusal: {max_rate: 500}",
     "gates.over_refusal.max_rate: max_rate is a fraction of responses, not a count per 100k: e.g. 0.005 for 500 per 100k"),
    ("  examples_per_target: 3", "  examples_per_target: 3\n  level: 90",
     "report.level: level is a fraction such as 0.9, not a percentage (e.g. 0.9 for 90%)"),
    ("  examples_per_target: 3", "  examples_per_target: 3\n  level: 1",
     "report.level: level is a fraction such as 0.9 (must be in (0.5, 1))"),
    ("  examples_per_target: 3", '  examples_per_target: 3\n  level: "90%"',
     "report.level: level is a fraction such as 0.9, not a percentage (e.g. 0.9 for 90%)"),
    ("  over_refusal: {max_rate: 1.0e-2}", '  over_refusal: {max_rate: "0.5%"}',
     "gates.over_refusal.max_rate: max_rate is a fraction of responses, not a percentage: e.g. 0.005 for 0.5%"),
])
def test_a_number_in_the_wrong_unit_says_the_unit(tmp_path, old, new, message):
    text = DEMO.replace(old, new)
    assert text != DEMO
    p = write(tmp_path, text)
    with pytest.raises(ParamsError) as e:
        load_release(p)
    assert str(e.value) == f"{p}:{_line(text, new.splitlines()[-1])}: {message}"


@pytest.mark.parametrize("old, new, field, suggest", [
    ("history: history.csv", "history: params/history.csv", "history", "history.csv"),
    ("history: history.csv", "history: history-2025.csv", "history", None),
    ("taxonomy: taxonomy.yaml", "taxonomy: params/taxonomy.yaml", "taxonomy", "taxonomy.yaml"),
    ("taxonomy: taxonomy.yaml", "taxonomy: taxonomy-acme2.yaml", "taxonomy", None),
    (VALIDATION_LINE, "  validation: [params/validation/over_refusal_xstest.csv]", "grading.validation",
     "validation/over_refusal_xstest.csv"),
    ("  previous: {kind: sim_world, deployment: Y}", "  previous: {kind: parquet, path: params/prev.parquet}",
     "sources.previous.path", "prev.parquet"),
])
def test_a_missing_relative_path_says_where_it_resolves_and_suggests_the_fix(tmp_path, old, new, field, suggest):
    """Relative paths resolve against the params file's folder: one that repeats the folder's
    name (`params/history.csv` in params/) gets the path without it suggested."""
    folder = tmp_path / "params"
    folder.mkdir()
    (folder / "prev.parquet").write_text("")  # only its existence is checked
    text = DEMO.replace(old, new)
    assert text != DEMO
    p = write(folder, text)
    given = new.split(": ", 1)[1].strip("[]}").split("path: ")[-1]
    hint = f"relative paths resolve against the params file's folder, {folder}"
    hint += f": did you mean {suggest!r}?" if suggest else ""
    with pytest.raises(ParamsError) as e:
        load_release(p)
    assert str(e.value) == f"{p}:{_line(text, new)}: {field}: file not found: {folder / given} ({hint})"


def test_real_responses_refusal_names_both_kinds_of_blind_grader(tmp_path):
    # rules marked sim_only and LLM rubrics on sim-grader together: the message said all of them were
    # "graded by rules", naming LLM-graded categories (abuse_harassment, ...) as its examples
    real = DEMO.replace('candidate: {base_url: "sim://world/resample", model: sim-x}',
                        'candidate: {base_url: "http://127.0.0.1:9/v1", model: my-model}')
    with pytest.raises(ParamsError) as e:
        load_release(write(tmp_path, real))
    msg = str(e.value)
    assert "graded by rules or the simulated grader, which read only" in msg, msg
    assert "categories (fabricated_facts, hate, nonviolent_wrongdoing, ...)" in msg, msg


@pytest.mark.parametrize("name", ["..", ".", ".cache", "-x"])
def test_a_release_name_cannot_leave_the_reports_folder(tmp_path, name):
    # `release: ".."` made reports/.. the release folder: the run wrote its tables and notebooks
    # beside reports/ and the render deleted the _site folder and _quarto.yml it found there
    p = write(tmp_path, DEMO.replace("release: demo", f'release: "{name}"'))
    with pytest.raises(ParamsError, match=r"rel.yaml:\d+: release: String should match pattern"):
        load_release(p)
