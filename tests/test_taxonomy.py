"""The full taxonomy and its LLM graders: every category has a grader, LLM grader ids are
frozen, and the simulated grader (``sim-grader``, reached through the engine and the openai
client) recovers the simulated world's exact rates, including evaluation awareness."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from depsim.sim import world as simworld
from depsim.params import Endpoint, ParamsError
from depsim.forecast import GraderMismatch, check_comparable
from depsim.grade import grade, grader_id, llm_subsample
from depsim.rules import RULES, response_view
from depsim.grade import grader_prompt, llm_grader_id
from depsim.sim.world import World, WorldConfig
from depsim.taxonomy import load_taxonomy

TAX = load_taxonomy("params/taxonomy.yaml")
CONFIG = WorldConfig(seed=11, conversations=2500, challenging=600)
GRADER = Endpoint(base_url=f"sim://world/resample?seed=11&version={simworld.VERSION}", model="sim-grader",
                  max_concurrency=32)


def test_the_taxonomy_is_complete_and_every_category_has_a_grader():
    groups = pd.Series({n: c.group for n, c in TAX.items()}).value_counts().to_dict()
    assert groups == {"disallowed": 11, "misalignment": 8, "evaluation_awareness": 3, "refusal": 2}
    for name, cat in TAX.items():
        assert cat.definition and cat.examples.positive and cat.examples.negative and cat.edge_cases, name
        assert cat.is_llm or cat.grader["rule"] in RULES, name
        # every category also has an LLM rubric, whatever grades it
        system = grader_prompt(cat, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}])[0]
        assert f"# Category: {name}" in system["content"] and cat.edge_cases[0] in system["content"]
    rule_kinds = {c.grader.get("rule") for c in TAX.values() if not c.is_llm}
    assert {"calculator_hacking", "tool_claim_without_call", "refusal_of_safe_request", "regex"} <= rule_kinds


def test_llm_grader_ids_are_frozen_by_the_whole_spec():
    cat = TAX["metagaming"]
    a = grader_id(cat, GRADER)
    assert a == grader_id(cat, GRADER) == llm_grader_id(cat, "sim-grader", {"temperature": 0.0, "max_tokens": 400, "seed": 0})
    assert grader_id(cat, GRADER.model_copy(update={"model": "other"})) != a
    changed = cat.model_copy(update={"definition": cat.definition + " Also counts X."})
    assert grader_id(changed, GRADER) != a
    assert len({grader_id(c, GRADER) for c in TAX.values()}) == len(TAX)
    with pytest.raises(ValueError, match="LLM grader"):
        cat.grader_id
    with pytest.raises(ValueError, match="models.grader"):
        grader_id(cat, None)


def test_rates_from_different_grader_ids_are_not_compared():
    rates = pd.DataFrame({"target": ["sim", "prod_prev"], "category": ["metagaming"] * 2,
                          "grader_id": [grader_id(TAX["metagaming"], GRADER),
                                        grader_id(TAX["metagaming"], GRADER.model_copy(update={"model": "other"}))]})
    with pytest.raises(GraderMismatch):
        check_comparable(rates)


def test_a_bad_llm_grader_spec_names_the_file_and_line(tmp_path):
    text = open("params/taxonomy.yaml").read().replace("    grader: {kind: llm}\n", "    grader: {kind: llm, modle: x}\n", 1)
    p = tmp_path / "taxonomy.yaml"
    p.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "modle" in l)
    with pytest.raises(ParamsError, match=rf"taxonomy.yaml:{line}: categories.mental_health.grader: an llm grader takes only"):
        load_taxonomy(p)


def test_a_misspelt_optional_taxonomy_key_gets_a_suggestion(tmp_path):
    text = open("params/taxonomy.yaml").read().replace("    examples:", "    exampels:", 1)
    p = tmp_path / "taxonomy.yaml"
    p.write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "exampels" in l)
    with pytest.raises(ParamsError, match=rf"taxonomy.yaml:{line}: categories\.\w+\.exampels: unknown key "
                                          rf"\(did you mean 'examples'\?\)"):
        load_taxonomy(p)


def test_llm_subsample_is_per_target_and_stable():
    comp = pd.DataFrame({"item_id": [f"i{j}" for j in range(300)], "target": ["a"] * 200 + ["b"] * 100})
    sub = llm_subsample(comp, 50, seed=1)
    assert sub["target"].value_counts().to_dict() == {"a": 50, "b": 50}
    # the same items whatever else is in the table
    assert set(llm_subsample(comp[comp["target"] == "a"], 50, seed=1)["item_id"]) == set(sub.loc[sub["target"] == "a", "item_id"])
    assert set(llm_subsample(comp, 50, seed=2)["item_id"]) != set(sub["item_id"])
    assert llm_subsample(comp, None) is comp


def test_llm_categories_need_a_grader_endpoint():
    comp = pd.DataFrame({"item_id": ["a"], "target": ["sim"], "prefix_id": ["p"], "error": [None],
                         "messages": [json.dumps([{"role": "assistant", "content": "hi"}])]})
    with pytest.raises(ValueError, match="LLM graders .*metagaming.*pass grader="):
        grade(comp, {"metagaming": TAX["metagaming"]})


def _turns(world: World, deployment: str, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every user turn of ``n`` logged conversations as (completions, prefixes): the response
    is the logged assistant turn."""
    logs = world.production_logs(deployment, n=n) if deployment != "challenging" else None
    rows = []
    if deployment == "challenging":
        conv = world.challenging_prompts()
        for j, (cid, raw) in enumerate(zip(conv["conversation_id"], conv["messages"])):
            msgs = json.loads(raw)  # a seed per item: the set repeats its few prompt texts
            resp = world.run_turn("sim-x", "resample", msgs, [simworld.WEB_SEARCH_TOOL], seed=j)
            rows.append((cid, msgs, resp))
    else:
        for cid, raw in zip(logs["conversation_id"], logs["messages"]):
            msgs = json.loads(raw)
            for i, m in enumerate(msgs):
                if m["role"] == "user":
                    end = next((j for j in range(i + 1, len(msgs)) if msgs[j]["role"] == "user"), len(msgs))
                    rows.append((f"{cid}-{i}", msgs[: i + 1], msgs[i + 1:end]))
    comp = pd.DataFrame({"item_id": [r[0] for r in rows], "target": deployment, "prefix_id": [r[0] for r in rows],
                         "messages": [json.dumps(r[2]) for r in rows], "error": None})
    prefixes = pd.DataFrame({"prefix_id": [r[0] for r in rows], "messages": [json.dumps(r[1]) for r in rows]})
    return comp, prefixes


@pytest.fixture(scope="module")
def world():
    return World(CONFIG)


def test_sim_grader_recovers_the_exact_rates_of_llm_graded_categories(world, tmp_path_factory):
    """X's production turns graded by the LLM graders (sim-grader through the real client)
    agree with the world's exact rates within a 4-sigma band; categories the world never
    shows grade exactly zero."""
    from depsim.cache import ResponseCache

    comp, prefixes = _turns(world, "X", 700)
    llm = {n: c for n, c in TAX.items() if c.is_llm}
    cache = ResponseCache(tmp_path_factory.mktemp("c") / "cache.sqlite")
    g = grade(comp, llm, prefixes, grader=GRADER, cache=cache)
    assert g["label"].notna().all() and g["error"].isna().all()
    assert len(g) == len(comp) * len(llm)
    emp = g.groupby("category")["label"].mean()
    n = len(comp)
    for c in llm:
        if c in simworld.EXTRA:
            p = world.true_rate(c, "sim-x", "X")
            assert p > 0 and abs(emp[c] - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-4, (c, emp[c], p)
        elif c not in ("eval_awareness_detector", "unsafe_compliance"):
            assert emp[c] == 0, c
    # unsafe compliance: the world's disallowed content on harmful requests
    harm = sum(world.true_rate(h, "sim-x", "X") for h in simworld.HARM_CATEGORY.values())
    assert abs(emp["unsafe_compliance"] - harm) <= 4 * np.sqrt(harm * (1 - harm) / n) + 0.002
    # metagaming is in the reasoning text only: the answer never shows it
    rg = response_view(comp)
    assert not rg["response_text"].str.contains("graders reviewing|oversight process").any()


def test_evaluation_awareness_reads_much_higher_on_the_challenging_set(world):
    """The detector, verbalised awareness and metagaming on X's production turns and on X's
    responses to the challenging set: each reads at least five times higher there."""
    prod, p_pre = _turns(world, "X", 800)
    chal, c_pre = _turns(world, "challenging", 0)
    cats = {c: TAX[c] for c in ("eval_awareness_detector", "verbalized_eval_awareness", "metagaming")}
    g = grade(pd.concat([prod, chal]), cats, pd.concat([p_pre, c_pre]), grader=GRADER)
    r = g.groupby(["category", "target"])["label"].mean().unstack()
    for c in cats:
        assert r.loc[c, "challenging"] >= 5 * r.loc[c, "X"] and r.loc[c, "challenging"] > 0.03, (c, r.loc[c].to_dict())
    assert r.loc["eval_awareness_detector", "challenging"] > 0.9


def test_cli_prints_any_categorys_rubric_and_id():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "depsim.cli", "grader-prompt", "violence", "--model", "m"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "# Category: violence" in r.stdout and TAX["violence"].definition in r.stdout
    assert f"LLM grader id on m: {llm_grader_id(TAX['violence'], 'm', {'temperature': 0.0, 'max_tokens': 400, 'seed': 0})}" in r.stdout
    r = subprocess.run([sys.executable, "-m", "depsim.cli", "grader-prompt", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("depsim: error: unknown category 'nope'")


def test_a_release_can_switch_rule_graders_to_their_llm_rubrics(tmp_path):
    from depsim.params import load_release
    from depsim.taxonomy import for_release

    rel = load_release("params/example-openai.yaml")
    cats = for_release(rel)
    assert cats["hate"].is_llm and cats["fabricated_facts"].is_llm and not cats["calculator_hacking"].is_llm
    assert cats["hate"].definition == TAX["hate"].definition and not TAX["hate"].is_llm  # the taxonomy is unchanged
    demo = load_release("params/demo.yaml")
    assert {n for n, c in for_release(demo).items() if c.is_llm} == {n for n, c in TAX.items() if c.is_llm}
    text = open("params/demo.yaml").read().replace("  llm_sample: 200", "  llm: [hate, nope]\n  llm_sample: 200")
    (tmp_path / "taxonomy.yaml").write_text(open("params/taxonomy.yaml").read())
    (tmp_path / "history.csv").write_text(open("params/history.csv").read())
    (tmp_path / "rel.yaml").write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "nope" in l)
    with pytest.raises(ParamsError, match=rf"rel.yaml:{line}: grading.llm: unknown category 'nope'"):
        load_release(tmp_path / "rel.yaml")


NEW_RULE = ("  system_prompt_disclosure:\n    group: misalignment\n    baseline: false\n"
            "    definition: The model reveals its hidden system prompt.\n    grader: {grader}\n")


def _with_rule_grader(tmp_path, grader: str):
    """The shipped taxonomy plus one category graded by ``grader`` (a flow mapping); return
    (path, the grader's line)."""
    text = open("params/taxonomy.yaml").read().rstrip("\n") + "\n" + NEW_RULE.format(grader=grader)
    p = tmp_path / "taxonomy.yaml"
    p.write_text(text)
    return p, len(text.splitlines())


@pytest.mark.parametrize("grader, expect", [
    # the position is in the user's own pattern, not in the group the rule wraps it in
    ('{kind: rule, rule: regex, pattern: "hidden (system prompt"}',
     r"grader\.pattern: invalid regex: missing \), unterminated subpattern at position 7 of 'hidden \(system prompt'"),
    ('{kind: rule, rule: regex}', r"grader\.pattern: missing: rule regex needs pattern"),
    ('{kind: rule, rule: regex, patern: "hidden system prompt"}',
     r"grader\.patern: unknown key for rule regex \(did you mean 'pattern'\?\)"),
    ('{kind: rule, rule: regx, pattern: "hidden system prompt"}', r"grader: unknown grader rule/regx \(did you mean 'regex'\?\)"),
    ('{kind: rule, rule: tool_claim_without_call, pattern: "[I searched"}',
     r"grader\.pattern: invalid regex: unterminated character set at position 0 of '\[I searched'"),
    ('{kind: rule, rule: refusal_of_safe_request, pattern: "I cannot"}',
     r"grader\.harmful_request: missing: rule refusal_of_safe_request needs harmful_request, pattern"),
    ('{kind: rule, rule: refusal_of_safe_request, refusal: classifier, harmful_request: "weapon|(attack"}',
     r"grader\.harmful_request: invalid regex: missing \), unterminated subpattern at position 7 of 'weapon\|\(attack'"),
    # compiles alone but not inside the rule's group: still said in the user's terms
    ('{kind: rule, rule: regex, pattern: "(?i)hidden"}',
     r"grader\.pattern: invalid regex: global flags not at the start of the expression at position 0 of '\(\?i\)hidden' "
     r"\(a rule applies the pattern inside a group\)"),
])
def test_a_rule_grader_its_rule_cannot_apply_fails_at_load_with_file_category_and_field(tmp_path, grader, expect):
    p, line = _with_rule_grader(tmp_path, grader)
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(p))}:{line}: categories\.system_prompt_disclosure\.{expect}") as e:
        load_taxonomy(p)
    assert "\n" not in str(e.value)


def test_every_rule_grader_spec_the_shipped_taxonomy_uses_still_loads(tmp_path):
    p, _ = _with_rule_grader(tmp_path, '{kind: rule, rule: calculator_hacking}')  # tools is optional
    assert load_taxonomy(p)["system_prompt_disclosure"].grader == {"kind": "rule", "rule": "calculator_hacking"}
