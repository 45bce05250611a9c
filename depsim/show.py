"""What the notebooks show reviewers: banners, escaped tables and transcripts, and charts.

Conversation text is untrusted. Everything here escapes it (``html.escape`` or
``DataFrame.to_html(escape=True)``); never pass it to ``Markdown`` or raw ``HTML``.
Charts render as static SVG through vl-convert, so they draw with no network.
"""
from __future__ import annotations

import html
import json

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import HTML

from depsim.params import Release
from depsim.records import decode_messages

alt.renderers.enable("svg")  # static SVG: no CDN scripts, readable offline
alt.data_transformers.disable_max_rows()

SIM_NOTE = ("Simulated world", "every number on this page comes from depsim's simulated deployment "
            "world (depsim.sim.world), not from real traffic or real models.")
PUBLIC_NOTE = ("Public prefix source", "public chat data sets drop or redact flagged conversations "
               "(e.g. WildChat removes those flagged by moderation), so disallowed content is "
               "under-represented and forecasts of it are biased low.")


def banner(rel: Release) -> HTML:
    """Return the page banner: release title, and the simulated-world or public-data caveat."""
    notes = []
    if rel.simulated:
        notes.append(SIM_NOTE)
    if rel.public:
        notes.append(PUBLIC_NOTE)
    body = "".join(f"<p><strong>{html.escape(head)}:</strong> {html.escape(text)}</p>" for head, text in notes)
    return HTML(f'<div class="depsim-banner" style="border-left:6px solid #d97706;background:#fff7ed;'
                f'padding:8px 14px;margin:8px 0"><p><em>{html.escape(rel.title)}</em> '
                f'(release <code>{html.escape(rel.release)}</code>)</p>{body}</div>')


def table(df: pd.DataFrame | None, digits: int = 4, index: bool = False, empty: str | None = None,
          columns: list[str] | None = None) -> HTML:
    """Return ``df`` (only ``columns``, when given) as an escaped HTML table, floats shown
    with ``digits`` significant digits; when ``df`` is None or has no rows and ``empty`` is
    given, that text instead."""
    if empty is not None and (df is None or len(df) == 0):
        return text(empty)
    if columns is not None:
        df = df[columns]
    return HTML(df.to_html(escape=True, index=index, na_rep="–",
                           float_format=lambda x: f"{x:.{digits}g}", classes="depsim-table", border=0))


def per100k(x):
    """Return a rate (fraction) as events per 100k, for display."""
    return np.asarray(x, dtype=float) * 1e5


def transcripts(prefixes: pd.DataFrame, completions: pd.DataFrame, n: int = 3, seed: int = 0,
                max_chars: int = 600) -> HTML:
    """Return up to ``n`` sampled transcripts (last user message and response) as escaped
    HTML; a bounded sample, never the whole table."""
    done = completions[completions["messages"].notna()]
    pick = done.sample(min(n, len(done)), random_state=seed) if len(done) else done
    users = prefixes.set_index("prefix_id")["messages"]
    blocks = []
    for _, row in pick.iterrows():
        msgs = decode_messages(users[row["prefix_id"]])
        last_user = [m for m in msgs if m.get("role") == "user"][-1]
        parts = [("user", last_user.get("content"))] + [
            (m.get("role"), m.get("content") if m.get("content") else json.dumps(m.get("tool_calls")))
            for m in decode_messages(row["messages"])]
        lines = "".join(f'<div><b>{html.escape(str(r))}</b>: {html.escape(str(t)[:max_chars])}</div>' for r, t in parts)
        blocks.append(f'<div class="depsim-transcript" style="border:1px solid #ddd;padding:6px;margin:6px 0">'
                      f'<small>{html.escape(row["target"])} · {html.escape(str(row["item_id"]))}</small>{lines}</div>')
    return HTML("".join(blocks) or "<p>No transcripts.</p>")


def forecast_chart(scored: pd.DataFrame | None, empty: str = "") -> alt.LayerChart | HTML:
    """Return the log–log chart of forecast against realised rate (per 100k), with the 1:1
    line and shaded bands within 2× (darker) and 5×, one colour per method; ``empty`` as
    text before release (no scored rows)."""
    if scored is None:
        return text(empty)
    d = scored.assign(forecast=per100k(scored["rate"]), realised_=per100k(scored["realised"]),
                      lo_=per100k(scored["lo"]), hi_=per100k(scored["hi"]))
    vals = np.concatenate([d["forecast"], d["realised_"]])
    lo, hi = max(vals[vals > 0].min() / 3, 0.1), vals.max() * 3
    grid = np.geomspace(lo, hi, 50)
    scale = alt.Scale(type="log", domain=[lo, hi], clamp=True)
    x = alt.X("x:Q", scale=scale, title="realised rate (per 100k)")
    bands = [alt.Chart(pd.DataFrame({"x": grid, "y0": grid / f, "y1": grid * f})).mark_area(opacity=0.1, color="#555")
             .encode(x=x, y=alt.Y("y0:Q", scale=scale), y2="y1:Q") for f in (5, 2)]
    one = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(color="black", strokeDash=[4, 3]).encode(
        x=x, y=alt.Y("y:Q", scale=scale))
    color = alt.Color("method:N", title="method")
    err = alt.Chart(d).mark_rule().encode(x=alt.X("realised_:Q", scale=scale), y=alt.Y("lo_:Q", scale=scale),
                                          y2="hi_:Q", color=color)
    pts = alt.Chart(d).mark_point(filled=True, size=60).encode(
        x=alt.X("realised_:Q", scale=scale), y=alt.Y("forecast:Q", scale=scale, title="forecast rate (per 100k)"),
        color=color, tooltip=["category", "method", "forecast", "realised_"])
    return alt.layer(*bands, one, err, pts).properties(width=420, height=380)


def rates_chart(rates: pd.DataFrame) -> alt.Chart:
    """Return a chart of each target's rate per category (per 100k) with Jeffreys intervals."""
    d = rates.dropna(subset=["rate"]).assign(rate100k=lambda x: per100k(x["rate"]),
                                              lo100k=lambda x: per100k(x["lo"]), hi100k=lambda x: per100k(x["hi"]))
    scale = alt.Scale(type="log")
    base = alt.Chart(d).encode(y=alt.Y("category:N", title=None), color="target:N", yOffset="target:N")
    return (base.mark_rule().encode(x=alt.X("lo100k:Q", scale=scale, title="rate per 100k (log)"), x2="hi100k:Q")
            + base.mark_point(filled=True).encode(x=alt.X("rate100k:Q", scale=scale))).properties(width=480)


def eval_awareness_chart(rates: pd.DataFrame, targets: list[str]) -> alt.Chart | HTML:
    """Return a chart of the evaluation-awareness measures (percent of responses, Jeffreys
    95% intervals) per target of ``targets``: one row per measure, one colour per target."""
    rates = rates[rates["target"].isin(targets)]
    if not (rates["group"] == "evaluation_awareness").any():
        return text("This release tracks no evaluation-awareness measure.")
    d = rates[(rates["group"] == "evaluation_awareness") & ~rates["target"].str.endswith("_rw")].dropna(subset=["rate"])
    d = d.assign(pct=d["rate"] * 100, lo_pct=d["lo"] * 100, hi_pct=d["hi"] * 100)
    base = alt.Chart(d).encode(y=alt.Y("category:N", title=None), color="target:N", yOffset="target:N")
    return (base.mark_rule().encode(x=alt.X("lo_pct:Q", title="% of responses"), x2="hi_pct:Q")
            + base.mark_point(filled=True).encode(x="pct:Q", tooltip=["target", "category", "k", "n"])).properties(width=480)


def winrate_chart(winrates: pd.DataFrame | None, empty: str = "") -> alt.Chart | HTML:
    """Return a chart of the simulated continuation's realism win rate (percent, Jeffreys 95%
    interval) per tool mode and tool, with the 50% line (cannot be told apart); ``empty``
    as text when there are no win rates."""
    if winrates is None:
        return text(empty)
    d = winrates.dropna(subset=["win_rate"]).assign(pct=lambda x: x["win_rate"] * 100, lo_pct=lambda x: x["lo"] * 100,
                                                    hi_pct=lambda x: x["hi"] * 100)
    base = alt.Chart(d).encode(y=alt.Y("mode:N", title=None), color="tool:N", yOffset="tool:N")
    half = alt.Chart(pd.DataFrame({"x": [50]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="x:Q")
    return (base.mark_rule().encode(x=alt.X("lo_pct:Q", title="simulated judged real (%)", scale=alt.Scale(domain=[0, 100])),
                                    x2="hi_pct:Q")
            + base.mark_point(filled=True).encode(x="pct:Q", tooltip=["mode", "tool", "k", "n"]) + half).properties(width=420)


def fidelity_chart(curves: pd.DataFrame | None, empty: str = "") -> alt.HConcatChart | HTML:
    """Return the fidelity curves side by side: each tool category's ``sim`` rate (per 100k,
    Jeffreys 95% intervals) against tool fidelity with its production truth (dashed), and
    the realism win rate on tool turns (percent) with the 50% line; ``empty`` as text when
    there are no curves."""
    if curves is None:
        return text(empty)
    d = curves.assign(rate100k=per100k(curves["rate"]), lo100k=per100k(curves["lo"]), hi100k=per100k(curves["hi"]),
                      truth100k=per100k(curves["truth_prod"]))
    x = alt.X("fidelity:Q", title="tool fidelity of the resampling environment")
    base = alt.Chart(d).encode(x=x, color=alt.Color("category:N", title=None))
    rates = (base.mark_line(point=True).encode(y=alt.Y("rate100k:Q", title="sim rate per 100k"))
             + base.mark_rule().encode(y="lo100k:Q", y2="hi100k:Q")
             + base.mark_line(strokeDash=[4, 4]).encode(y="truth100k:Q")).properties(width=300, title="forecast vs production truth (dashed)")
    w = d.drop_duplicates("fidelity").assign(pct=lambda z: z["win_rate_tool"] * 100, lo_pct=lambda z: z["win_tool_lo"] * 100,
                                             hi_pct=lambda z: z["win_tool_hi"] * 100)
    wb = alt.Chart(w).encode(x=x)
    half = alt.Chart(pd.DataFrame({"y": [50]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="y:Q")
    wins = (wb.mark_line(point=True).encode(y=alt.Y("pct:Q", title="simulated judged real (%)", scale=alt.Scale(domain=[0, 60])))
            + wb.mark_rule().encode(y="lo_pct:Q", y2="hi_pct:Q") + half).properties(width=300, title="realism win rate, tool turns")
    return alt.hconcat(rates, wins)


def _fmt(rate, lo, hi) -> str:
    if rate is None or np.isnan(rate):
        return "–"
    r, l, h = per100k([rate, lo, hi])
    return f"{r:,.0f} [{l:,.0f}–{h:,.0f}]"


def forecast_table(fc: pd.DataFrame) -> HTML:
    """Return the forecast table: one row per category, the methods side by side (rate per
    100k [95% interval]) and, once released (scored rows), the realised prod_new rate and
    its change since Y."""
    rows = []
    methods = [m for m in ("deployment_sim", "deployment_sim_reweighted", "challenging", "prev_production")
               if m in set(fc["method"])]
    for cat, g in fc.groupby("category", sort=False):
        by = g.set_index("method")
        first = g.iloc[0]
        row = {"category": cat, "group": first["group"]}
        for m in methods:
            row[m] = _fmt(*by.loc[m, ["rate", "lo", "hi"]]) if m in by.index else "not a baseline category"
        if "realised" in g:
            row["realised (prod_new)"] = f"{per100k(first['realised']).item():,.0f}"
            row["realised change"] = f"{first['realised_change']:.2f}×"
        rows.append(row)
    return table(pd.DataFrame(rows))


def prefix_examples(prefixes: pd.DataFrame, n: int = 3, seed: int = 0, max_chars: int = 400) -> HTML:
    """Return ``n`` sampled prefixes (their user messages) as escaped HTML."""
    pick = prefixes.sample(min(n, len(prefixes)), random_state=seed)
    blocks = []
    for _, row in pick.iterrows():
        users = [m.get("content") for m in decode_messages(row["messages"]) if m.get("role") == "user"]
        lines = "".join(f"<div><b>user</b>: {html.escape(str(u)[:max_chars])}</div>" for u in users)
        blocks.append(f'<div class="depsim-transcript" style="border:1px solid #ddd;padding:6px;margin:6px 0">'
                      f'<small>{html.escape(row["pool"])} · turn {int(row["turn_index"])}</small>{lines}</div>')
    return HTML("".join(blocks))


def text(s: str) -> HTML:
    """Return untrusted text as an escaped HTML paragraph."""
    return HTML(f"<p>{html.escape(s)}</p>")


def pre(s: str) -> HTML:
    """Return untrusted multi-line text as an escaped preformatted block."""
    return HTML(f"<pre>{html.escape(s)}</pre>")


def usage(run) -> HTML:
    """Return the tokens a run generated per role and model, and their cost (USD) where the
    endpoint gives prices."""
    return table(pd.DataFrame(run.usage_table(), columns=["role/model", "prompt_tokens", "completion_tokens", "cost_usd"]))


def tool_mode(rel: Release) -> HTML:
    """Return one line naming the release's tool mode, step limit and replay-miss rule."""
    g = rel.generation
    return text(f"Tool mode: {g.tool_mode} (max {g.max_tool_steps} assistant messages per turn; "
                f"replay misses: {g.replay_miss}).")


def transcripts_by_target(prefixes: pd.DataFrame, completions: pd.DataFrame, targets: list[str], n: int = 2,
                          seed: int = 0) -> HTML:
    """Return :func:`transcripts` for each target in turn (``n`` per target), as one block."""
    return HTML("".join(transcripts(prefixes, completions[completions["target"] == t], n=n, seed=seed).data
                        for t in targets))


def fidelity_table(curves: pd.DataFrame | None) -> HTML:
    """Return the fidelity curves' numbers: rates per 100k, win rates as fractions."""
    if curves is None:
        return text("Fidelity curves need the simulated world and `realism.fidelities`.")
    cols = ["fidelity", "category", "k", "n", "rate", "lo", "hi", "truth_prod", "win_rate_tool", "win_tool_lo",
            "win_tool_hi", "win_tool_n"]
    return table(curves[cols].assign(**{c: per100k(curves[c]) for c in ("rate", "lo", "hi", "truth_prod")}), digits=4)


def clusters(table_: pd.DataFrame) -> HTML:
    """Return the audit's clusters: size, label, matched category, similarity, novel flag and
    the per-target rates."""
    cols = ["cluster", "size", "label", "category", "similarity", "novel"] + [c for c in table_ if c.endswith("_rate")]
    return table(table_[cols])


def detection(mdr: float, n_audited: int) -> HTML:
    """Return one line: responses audited per target and the minimum detectable rate."""
    return text(f"Audited {n_audited} responses per target: minimum detectable rate {mdr:.2%} "
                f"({mdr * 1e5:,.0f} per 100k).")


def rates_table(rates: pd.DataFrame, targets: list[str]) -> HTML:
    """Return rates per 100k, one row per category and one column per target of ``targets``."""
    wide = rates.assign(per100k=per100k(rates["rate"])).pivot(index="category", columns="target", values="per100k")
    return table(wide[[t for t in targets if t in wide]].reset_index(), digits=4)


def eval_awareness_table(rates: pd.DataFrame, targets: list[str]) -> HTML | None:
    """Return the evaluation-awareness measures in percent of responses, one column per
    target of ``targets``; None when the release tracks none."""
    ea = rates[(rates["group"] == "evaluation_awareness") & rates["target"].isin(targets)]
    if not len(ea):
        return None
    return table(ea.assign(percent=ea["rate"] * 100).pivot(index="category", columns="target", values="percent")
                 .reset_index(), digits=3)


def forecasts(fc: pd.DataFrame) -> HTML:
    """Return the forecasts: rate, Jeffreys and (with a history) predictive intervals per
    100k, Y's previous rate and the direction, per category and method."""
    cols = [c for c in ("rate", "lo", "hi", "pred_lo", "pred_hi", "prev_rate") if c in fc]
    return table(fc.assign(**{c: per100k(fc[c]) for c in cols})[["category", "method", *cols, "direction"]], digits=4)


def removed(share: float | None) -> HTML:
    """Return one line on the share of the measured prefix error that reweighting removes
    (nothing when the release does not reweight)."""
    if share is None:
        return text("")
    return text(f"Reweighting removes {share:.0%} of the measured prefix error (mean log SME over categories; "
                "the measurement carries sampling noise).")
