"""The real-model release (params/smollm2-local.yaml) end to end on a small sample: every
model role (candidate, grader, auditor, tool simulator, realism judge) is SmolLM2-135M-Instruct
on llama.cpp's server (tests/llama_server.py), on real HH-RLHF prefixes and SimpleSafetyTests
prompts from data/. The release runs as shipped, with only what a test must change: the
server's base_url, a small sample, a few categories (two LLM-graded, one rule) and a canary
API key. SKIPS without the server (scripts/install_llama_server.sh), fails instead under
DEPSIM_REQUIRE_LLAMA=1."""
from __future__ import annotations

import re

import yaml

from depsim.params import load_release
from depsim.records import read_table, release_dir
from depsim.runner import NOTEBOOK_ORDER, run_release
from depsim.show import EXAMPLES_PAGE, anchor
from conftest import ROOT

PARAMS = ROOT / "params" / "smollm2-local.yaml"
CANARY = "sk-canary-7c1f0e9a4b2d4e6f8a0b1c2d3e4f5a6b"
#: LLM-graded here: over_refusal through grading.llm, unsafe_compliance by the taxonomy
LLM_CATEGORIES = ["over_refusal", "unsafe_compliance"]
RULE_CATEGORIES = ["lying_about_tools"]


def small_params(server, folder, llm_sample: int = 1) -> tuple[dict, object]:
    """Write the shipped release with the server's URL and a small sample into ``folder``;
    return (the params dict, its path)."""
    p = yaml.safe_load(PARAMS.read_text())
    for k in ("previous", "challenging"):  # paths resolve against the params file's folder
        p["sources"][k]["path"] = str((PARAMS.parent / p["sources"][k]["path"]).resolve())
    p["taxonomy"] = str(PARAMS.parent / p["taxonomy"])
    p["grading"]["validation"] = [str(PARAMS.parent / v) for v in p["grading"]["validation"]]
    ep = {**p["models"]["candidate"], "base_url": f"{server.base_url}/v1", "model": server.model,
          "api_key_env": "DEPSIM_TEST_SMOLLM2_KEY"}
    p["models"] = {role: ep for role in ("candidate", "grader", "auditor", "tool_simulator", "judge")}
    p["realism"].update(model=ep, sample=2)
    p["sampling"].update(n=6, challenging_n=3)
    p["generation"]["max_tokens"] = 48
    p["grading"]["llm_sample"] = llm_sample
    p["audit"]["sample"] = 2
    p["categories"] = LLM_CATEGORIES + RULE_CATEGORIES
    path = folder / "smollm2-test.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return p, path


def test_shipped_release_passes_check_as_is():
    rel = load_release(PARAMS)  # depsim check's validation: no sim-only rule left for a real candidate
    roles = {r: getattr(rel.models, r) for r in ("candidate", "grader", "auditor", "tool_simulator", "judge")}
    assert {e.model for e in roles.values()} == {"SmolLM2-135M-Instruct"}
    assert all(e.max_concurrency == 1 and not e.base_url.startswith("sim://") for e in roles.values())
    assert rel.realism.model.model == "SmolLM2-135M-Instruct" and not rel.simulated
    assert "135M" in rel.notice and "no grader" in rel.notice


def test_release_end_to_end_on_smollm2(llama_server, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPSIM_TEST_SMOLLM2_KEY", CANARY)
    p, params = small_params(llama_server, tmp_path)
    reports = tmp_path / "reports"
    res = run_release(params, reports, render_engine="nbconvert")
    out = release_dir(reports, p["release"])
    print(f"release ran in {res['seconds']:.0f} s: {res['sent']} requests sent, {res['failed']} failed")

    # every stage and page ran (a failed stage raises StageFailed) and rendered
    assert all((out / f"{stem}.ipynb").is_file() for stem in NOTEBOOK_ORDER)
    assert res["index"] is not None and res["index"].is_file() and res["sent"] > 0

    # the candidate answered on real prefixes and prompts
    comp = read_table(reports, p["release"], "completions")
    gen = comp[comp["target"].isin(["sim", "challenging"])]
    assert set(gen["target"]) == {"sim", "challenging"} and len(gen) == 6 + 3
    assert gen["error"].isna().sum() > 0 and (gen["model"] == llama_server.model).all()
    assert comp.loc[comp["target"] == "prod_prev", "finish"].eq("logged").all()  # HH-RLHF's own replies

    # every LLM grade is a label or a counted failure with its reason, and the rates count both
    grades = read_table(reports, p["release"], "grades")
    rates = read_table(reports, p["release"], "rates")
    for cat in LLM_CATEGORIES:
        for target in ("sim", "challenging", "prod_prev"):
            g = grades[(grades["category"] == cat) & (grades["target"] == target)]
            pool = comp[(comp["target"] == target) & comp["error"].isna()]
            assert len(g) == min(p["grading"]["llm_sample"], len(pool)), (cat, target)
            assert (g["label"].isna() == g["error"].notna()).all()
            [row] = rates[(rates["category"] == cat) & (rates["target"] == target)].to_dict("records")
            assert (row["n"], row["failed"]) == (int(g["label"].notna().sum()), int(g["label"].isna().sum()))
    # SmolLM2's over-refusal validation is on record (same grader id as its grades): the rate
    # carries it, and it misses the bar; the other LLM category has none on record
    status = rates.drop_duplicates("category").set_index("category")["validation"]
    assert status["over_refusal"] == "misses bar" and status["unsafe_compliance"] == "none on record", status
    llm = grades[grades["category"].isin(LLM_CATEGORIES)]
    print("SmolLM2 grades:", len(llm), "failed:", llm["error"].value_counts().head(5).to_dict())
    for cat in RULE_CATEGORIES:  # rule graders read every response
        assert (rates.loc[rates["category"] == cat, "n"] + rates.loc[rates["category"] == cat, "failed"]).sum() == \
            comp["error"].isna().sum()

    # the auditor and the judge ran on SmolLM2; their failures are rows, not gaps
    assert len(read_table(reports, p["release"], "findings")) > 0
    pairs = read_table(reports, p["release"], "realism_pairs")
    assert len(pairs) == 2 and (pairs["sim_won"].isna() == pairs["error"].notna()).all()

    # the summary says plainly that a 135M model is no grader, names the model behind each
    # role, and counts the failed grades
    summary = (out / "_site" / "index.html").read_text()
    assert "135M model" in summary and "it is no grader" in summary
    for role in ("candidate", "grader", "auditor", "tool simulator", "judge"):
        assert re.search(rf"<td>{role}</td>\s*<td>{re.escape(llama_server.model)}</td>", summary), role
    n_failed = int(llm["label"].isna().sum())
    if n_failed:
        assert "Nothing failed in this run." not in summary
    decision = summary[summary.index('class="depsim-decision"'):]
    decision = decision[:decision.index("</table>")]
    for cat in LLM_CATEGORIES + RULE_CATEGORIES:  # every category has its row, graded or not
        assert f'href="{EXAMPLES_PAGE}#{anchor("cat", cat)}"' in decision, cat

    # the canary key reached no table, notebook, page or log
    for f in reports.rglob("*"):
        if f.is_file() and not f.name.endswith(".answer-secret"):
            assert CANARY.encode() not in f.read_bytes(), f
