"""What the notebooks show reviewers: banners, escaped tables and transcripts, and charts.

Conversation text is untrusted. Everything here escapes it (:func:`escape`, or
``DataFrame.to_html(escape=True)`` on cells from :func:`cell`), which also shows bidirectional
controls as their code point; never pass it to ``Markdown`` or raw ``HTML``.
Charts render as static SVG through vl-convert, so they draw with no network.
"""
from __future__ import annotations

import html
import json
import re
import warnings

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import HTML

from depsim import sample, score, stats
from depsim.params import TARGETS, Release
from depsim.records import decode_messages

alt.renderers.enable("svg")  # static SVG: no CDN scripts, readable offline
# a warning on a page reads as one line, without the source file and line it came from
warnings.formatwarning = lambda message, category, *_args, **_kw: f"{category.__name__}: {message}\n"
alt.data_transformers.disable_max_rows()

SIM_NOTE = ("Simulated world", "every number on this page comes from depsim's simulated deployment "
            "world (depsim.sim.world), not from real traffic or real models.")
PUBLIC_NOTE = ("Public prefix source", "public chat data sets drop or redact flagged conversations "
               "(e.g. WildChat removes those flagged by moderation), so disallowed content is "
               "under-represented and forecasts of it are biased low.")

STAND_IN_NOTE = ("Stand-in post-release pool", "the candidate pool reuses the previous pool's conversations, "
                 "so it is not traffic after release; nothing here is scored against it as realised.")


#: bidirectional controls (embeddings, overrides, isolates) reorder the text after them:
#: "user\u202egnp.exe" reads "userexe.png" ("Trojan Source"); a page shows them as code points
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def visible(s: str) -> str:
    """Return ``s`` with each bidirectional control shown as its code point (``⟨U+202E⟩``)."""
    return _BIDI.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", s)


def escape(s: str) -> str:
    """Return untrusted text as HTML text: escaped (``html.escape``, quotes too), with its
    bidirectional controls shown (:func:`visible`)."""
    return visible(html.escape(s))


def banner(rel: Release) -> HTML:
    """Return the page banner: release title, the simulated-world, stand-in and public-data
    caveats, and the release's own ``notice``."""
    notes = []
    sim, real = rel.simulated_parts
    stand_in = sample.same_data(rel, rel.sources.previous, rel.sources.candidate)
    if stand_in:  # the same conversations as the previous pool: real text, but no traffic after release
        real = [x for x in real if x != "candidate traffic"]
    if sim and not real:
        notes.append(SIM_NOTE)
    elif sim:
        def words(xs):
            return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]
        notes.append(("Partly simulated", f"the {words(sim)} {'comes' if len(sim) == 1 else 'come'} from depsim's "
                                          f"simulated deployment world (depsim.sim.world), so rates of their "
                                          f"responses describe simulated models; the {words(real)} "
                                          f"{'is' if len(real) == 1 else 'are'} real."))
    if stand_in:
        notes.append(STAND_IN_NOTE)
    if rel.public:
        notes.append(PUBLIC_NOTE)
    if rel.notice:
        notes.append(("Notice", rel.notice))
    body = "".join(f"<p><strong>{escape(head)}:</strong> {escape(text)}</p>" for head, text in notes)
    return HTML(f'<div class="depsim-banner" style="border-left:6px solid #d97706;background:#fff7ed;'
                f'padding:8px 14px;margin:8px 0"><p><em>{escape(rel.title)}</em> '
                f'(release <code>{escape(rel.release)}</code>)</p>{body}</div>')


def table(df: pd.DataFrame | None, digits: int | None = None, index: bool = False, empty: str | None = None,
          columns: list[str] | None = None) -> HTML:
    """Return ``df`` (only ``columns``, when given) as an escaped HTML table through the one
    display layer (:func:`cell`: thousands separators, fixed precision, no scientific
    notation or Python reprs; :func:`readable` column names); ``digits`` fixes the decimals
    of non-integer numbers. When ``df`` is None or has no rows, ``empty`` (or a dash line)."""
    if df is None or len(df) == 0:
        return text(empty if empty is not None else "No rows.")
    if columns is not None:
        df = df[[c for c in columns if c in df]]
    if index:
        df = df.reset_index()

    def fmt(x):
        if digits is not None and isinstance(x, (float, np.floating)) and not _missing(x) and not float(x).is_integer():
            return number(x, digits)
        return cell(x)
    shown = pd.DataFrame({readable(c): df[c].map(fmt) for c in df.columns})
    return HTML(shown.to_html(escape=True, index=False, classes="depsim-table", border=0))


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
        lines = "".join(f'<div><b>{escape(str(r))}</b>: {escape(str(t)[:max_chars])}</div>' for r, t in parts)
        blocks.append(f'<div class="depsim-transcript" style="border:1px solid #ddd;padding:6px;margin:6px 0">'
                      f'<small>{escape(row["target"])} · {escape(str(row["item_id"]))}</small>{lines}</div>')
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
    # the chart says how to read it: the summary shows it without the score page's text
    title = alt.TitleParams("Forecast against realised rate, per 100k", anchor="start", fontSize=13, subtitle=[
        "Dots: each method's forecast (up) against the realised rate (across), log scales; bars: the forecast's interval.",
        "Dashed: a perfect forecast; grey bands: within 2× (darker) and 5×. A zero rate sits at the axis edge."])
    return alt.layer(*bands, one, err, pts).properties(width=420, height=380, title=title)


#: one colour per target on every chart of the report (Tableau 10), so a target reads the same on each
TARGET_COLORS = {"sim": "#4c78a8", "sim_rw": "#9ecae9", "sim_self": "#f58518", "challenging": "#e45756",
                 "prod_prev": "#54a24b", "prod_new": "#b279a2"}


def target_color(targets) -> alt.Color:
    """Return the colour encoding of the ``target`` field over ``targets``, each in its fixed
    colour (:data:`TARGET_COLORS`; a target not listed there in grey), legend in that order."""
    present = set(targets)
    dom = [t for t in TARGET_COLORS if t in present] + sorted(present - set(TARGET_COLORS))
    return alt.Color("target:N", title="target", sort=dom,
                     scale=alt.Scale(domain=dom, range=[TARGET_COLORS.get(t, "#9ca3af") for t in dom]))


def with_reweighted(rates: pd.DataFrame, targets: list[str]) -> list[str]:
    """Return the targets of ``targets`` that ``rates`` holds, each followed by its reweighted
    target (``<target>_rw``) where ``rates`` holds one."""
    have = set(rates["target"])
    return [x for t in targets for x in (t, f"{t}_rw") if x in have]


def rates_chart(rates: pd.DataFrame, targets: list[str], level: float = 0.95) -> alt.Chart:
    """Return a chart of each target's rate per category, k / n per 100k with its exact
    (Clopper–Pearson) ``level`` interval, for the targets of ``targets`` and their reweighted
    targets (the rates table's columns). Zero events draw no dot (no rate on a log axis),
    only their interval up to the exact upper bound."""
    shown = with_reweighted(rates, targets)
    r = rates[rates["target"].isin(shown) & (rates["n"].fillna(0) > 0)]
    ci = (stats.clopper_pearson(r["k"].round().to_numpy(), r["n"].round().to_numpy(), level) if len(r)
          else pd.DataFrame({"lo": [], "hi": []}))
    rate = (r["k"] / r["n"]).to_numpy(float)
    d = pd.DataFrame({"category": [category_title(c) for c in r["category"]], "target": r["target"].to_numpy(),
                      "flagged": [k_of_n(k, n) for k, n in zip(r["k"], r["n"])],
                      "rate100k": np.where(rate > 0, rate * 1e5, np.nan),
                      "lo100k": per100k(ci["lo"]), "hi100k": per100k(ci["hi"])})
    # the log axis starts a decade below the smallest rate seen, and the exact lower bounds
    # (0 at zero events) are clamped there instead of spanning empty decades
    seen = d["rate100k"].dropna()
    top = max(float(d["hi100k"].max()) if len(d) else 1.0, 1.0)
    low = 10 ** np.floor(np.log10(max(float(seen.min()) if len(seen) else 1.0, 1e-2)) - 1)
    decades = [10.0 ** e for e in range(int(np.log10(low)), int(np.ceil(np.log10(top))) + 1)]
    # half a decade of room past the last tick, so a dot at 100% (100,000) is drawn whole
    scale = alt.Scale(type="log", domain=[low, decades[-1] * 10 ** 0.25], clamp=True, nice=False)
    axis = alt.Axis(values=decades, format=",~g", grid=True)
    order = [t for t in shown if t in set(d["target"])]
    base = alt.Chart(d).encode(y=alt.Y("category:N", title=None), color=target_color(order),
                               yOffset=alt.YOffset("target:N", sort=order),
                               tooltip=["category", "target", "flagged", alt.Tooltip("rate100k:Q", format=",.0f", title="per 100k")])
    pct = f"{level:.0%}"
    return (base.mark_rule().encode(x=alt.X("lo100k:Q", scale=scale, axis=axis,
                                            title=f"rate per 100k, k / n (log scale; bars: exact {pct} intervals; "
                                                  "no dot: no event, bar up to the upper bound)"), x2="hi100k:Q")
            + base.mark_point(filled=True).encode(x=alt.X("rate100k:Q", scale=scale))
            ).properties(width=520, height=alt.Step(5, **{"for": "offset"}))


def eval_awareness_chart(rates: pd.DataFrame, targets: list[str], level: float = 0.95) -> alt.Chart | HTML:
    """Return a chart of the evaluation-awareness measures per target of ``targets``: k / n
    in percent of responses with the exact ``level`` interval (as the table beside it), one
    row per measure, one colour per target (:func:`target_color`)."""
    rates = rates[rates["target"].isin(targets)]
    if not (rates["group"] == "evaluation_awareness").any():
        return text("This release tracks no evaluation-awareness measure.")
    d = rates[(rates["group"] == "evaluation_awareness") & (rates["n"].fillna(0) > 0)]
    ci = _exact_intervals(d["k"], d["n"], level)
    d = pd.DataFrame({"category": [category_title(c) for c in d["category"]], "target": d["target"].to_numpy(),
                      "flagged": [k_of_n(k, n) for k, n in zip(d["k"], d["n"])],
                      "pct": (100 * d["k"] / d["n"]).to_numpy(float), "lo_pct": 100 * ci["lo"].to_numpy(),
                      "hi_pct": 100 * ci["hi"].to_numpy()})
    order = [t for t in targets if t in set(d["target"])]
    # a little room past 100%, so a dot there is drawn whole
    x = alt.Scale(domain=[0, 103], nice=False)
    axis = alt.Axis(values=list(range(0, 101, 10)))
    base = alt.Chart(d).encode(y=alt.Y("category:N", title=None), color=target_color(order),
                               yOffset=alt.YOffset("target:N", sort=order))
    return (base.mark_rule().encode(x=alt.X("lo_pct:Q", scale=x, axis=axis,
                                            title=f"% of responses, k / n (bars: exact {level:.0%} intervals)"), x2="hi_pct:Q")
            + base.mark_point(filled=True).encode(x=alt.X("pct:Q", scale=x), tooltip=["target", "category", "flagged"])
            ).properties(width=480)


def winrate_table(table_: pd.DataFrame | None, empty: str = "") -> HTML:
    """Return the realism win rates per tool mode and tool: pairs graded and the percent in
    which the judge took the simulated continuation for the real one, with its 95% interval
    in the same cell ("47.7% [42.1–53.3]"; 50% = cannot be told apart); ``empty`` as text
    when there are none."""
    if table_ is None or not len(table_):
        return text(empty)
    shown = pd.DataFrame({"mode": table_["mode"], "tool": table_["tool"], "pairs graded": table_["n"],
                          "judged real % [95%]": [f"{number(100 * w, 1)}% {interval(100 * lo, 100 * hi, 1)}"
                                                  if not _missing(w) else DASH
                                                  for w, lo, hi in zip(table_["win_rate"], table_["lo"], table_["hi"])]})
    return table(shown)


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
    """Return the fidelity curves side by side: each tool category's ``sim`` rate (k / n per
    100k, exact 95% intervals) against tool fidelity with its production truth (dashed), and
    the realism win rate on tool turns (percent) with the 50% line; ``empty`` as text when
    there are no curves."""
    if curves is None:
        return text(empty)
    ci = _exact_intervals(curves["k"], curves["n"])
    d = curves.assign(rate100k=per100k(curves["k"] / curves["n"]), lo100k=per100k(ci["lo"]), hi100k=per100k(ci["hi"]),
                      truth100k=per100k(curves["truth_prod"]))
    x = alt.X("fidelity:Q", title="tool fidelity of the resampling environment")
    # one legend, under the panel whose colours it names (not beside the single win-rate line)
    base = alt.Chart(d).encode(x=x, color=alt.Color("category:N", title=None, legend=alt.Legend(orient="bottom")))
    rates = (base.mark_line(point=True).encode(y=alt.Y("rate100k:Q", title="sim rate per 100k (k / n, exact 95%)"))
             + base.mark_rule().encode(y="lo100k:Q", y2="hi100k:Q")
             + base.mark_line(strokeDash=[4, 4]).encode(y="truth100k:Q")).properties(width=300, title="forecast vs production truth (dashed)")
    w = d.drop_duplicates("fidelity").assign(pct=lambda z: z["win_rate_tool"] * 100, lo_pct=lambda z: z["win_tool_lo"] * 100,
                                             hi_pct=lambda z: z["win_tool_hi"] * 100)
    wb = alt.Chart(w).encode(x=x)
    half = alt.Chart(pd.DataFrame({"y": [50]})).mark_rule(strokeDash=[4, 4], color="gray").encode(y="y:Q")
    wins = (wb.mark_line(point=True).encode(y=alt.Y("pct:Q", title="simulated judged real (%)", scale=alt.Scale(domain=[0, 60])))
            + wb.mark_rule().encode(y="lo_pct:Q", y2="hi_pct:Q") + half).properties(width=300, title="realism win rate, tool turns")
    return alt.hconcat(rates, wins).resolve_legend(color="independent")


def prefix_examples(prefixes: pd.DataFrame, n: int = 3, seed: int = 0, max_chars: int = 400,
                    max_messages: int = 12) -> HTML:
    """Return ``n`` sampled prefixes as escaped HTML: the whole prefix, every role (user,
    assistant, tool calls and outputs) up to and including the sampled user message, each
    message cut at ``max_chars`` characters and, in long conversations, only the last
    ``max_messages`` messages (the number left out is said). The header names the pool and
    the sampled user turn by its number among the conversation's user messages."""
    pick = prefixes.sample(min(n, len(prefixes)), random_state=seed)
    blocks = []
    for _, row in pick.iterrows():
        msgs = decode_messages(row["messages"])
        turn = sum(1 for m in msgs if m.get("role") == "user")  # the prefix ends at the sampled user message
        shown = msgs[-max_messages:]
        left = len(msgs) - len(shown)
        more = f'<div class="msg"><em>… {left:,} earlier message{"s" if left != 1 else ""} not shown</em></div>' if left else ""
        body = "".join(_message_html(m, max_chars) for m in shown)
        blocks.append(f'<div class="depsim-example"><small>{escape(str(row["pool"]))} · user turn {turn:,} · '
                      f'{len(msgs):,} message{"s" if len(msgs) != 1 else ""} in the prefix</small>{more}{body}</div>')
    return HTML(STYLE + "".join(blocks))


def text(s: str) -> HTML:
    """Return untrusted text as an escaped HTML paragraph (nothing for empty text)."""
    return HTML(f"<p>{escape(s)}</p>" if s else "")


def pre(s: str) -> HTML:
    """Return untrusted multi-line text as an escaped preformatted block."""
    return HTML(f"<pre>{escape(s)}</pre>")


#: the columns of score_summary's compact form (the release decision page), by key
COMPACT_SCORES = ["method", "direction", "sme_median", "sme_max", "worst_all", "coverage"]

#: what a coverage cell says when a method's predictive intervals say nothing (score.untracked)
NO_TRACK = ("no track record (or no information): its intervals span almost every count, so this coverage "
            "says nothing")


def coverage_cell(coverage, untracked=None, rows=None, digits: int = 0) -> str:
    """Return a method's predictive-interval coverage for a table cell: "89%"; when all of its
    ``rows`` intervals are uninformative (``untracked``: fitted on no earlier release or
    spanning almost every count, :func:`depsim.score.untracked`) the percent is followed by
    :data:`NO_TRACK`, and when some are, by how many (``digits``: the percent's decimals); a
    dash without coverage."""
    if _missing(coverage):
        return DASH
    pct = f"{coverage:.{digits}%}"
    if _missing(untracked) or not untracked:
        return pct
    if not _missing(rows) and untracked >= rows:
        return f"{pct} ⚠ {NO_TRACK}"
    of = "" if _missing(rows) else f" of {int(rows)}"
    return f"{pct} ⚠ {int(untracked)}{of} intervals uninformative (no track record, or spanning almost every count)"


def score_summary(summary: pd.DataFrame | None, empty: str = "No scores on this page.", compact: bool = False,
                  level: float | None = None, every: pd.DataFrame | None = None, scope: str = "") -> HTML:
    """Return depsim.score.summary's table folded for reading: one row per method with the
    summed NLL and regret (nats), SME median and mean with their bootstrap 95% intervals
    ("1.44 [1.21–1.79]"), worst SME, directional accuracy (right of large shifts, with the
    no-skill null's mean and p-value), predictive-interval coverage (percent; a method whose
    intervals say nothing is marked, :func:`coverage_cell`) and log-scale r. Every figure is
    on the one common set of categories and labelled so; ``every``
    (:func:`depsim.score.every_category`) adds each method's worst miss over every category it
    forecasts, named. ``level``: the predictive intervals' level, stated in the coverage
    column; ``scope``: what the rows are over ("this release", ...), stated under the table.
    ``compact``: only the columns of COMPACT_SCORES."""
    if summary is None or not len(summary):
        return text(empty)
    cov_name = ("coverage" if level is None else f"coverage of the {level:.0%} predictive interval") + " (common set)"
    names = {"method": "method", "categories": "categories (common set)", "nll_sum": "NLL sum (nats)",
             "regret_sum": "regret sum (nats)", "sme_median": "SME median [95%] (common set)",
             "sme_mean": "SME mean [95%] (common set)", "sme_max": "SME max (common set)",
             "worst_all": "worst miss, every category it forecasts", "direction": "direction right on large shifts",
             "coverage": cov_name, "log_r": "log r"}
    worst = {} if every is None or not len(every) else every.set_index("method")

    def with_ci(r, k):
        return f"{number(r[k], 2)} {interval(r[k + '_lo'], r[k + '_hi'])}"
    rows = []
    for _, r in summary.iterrows():
        null = "" if _missing(r.get("direction_null")) else \
            f" (no skill: {r['direction_null']:.2f}, p = {number(r['direction_p'], 3)})"
        row = {"method": r["method"], "categories": r["categories"], "nll_sum": number(r["nll_sum"], 2),
               "regret_sum": number(r["regret_sum"], 2), "sme_median": with_ci(r, "sme_median"),
               "sme_mean": with_ci(r, "sme_mean"), "sme_max": number(r["sme_max"], 2),
               "direction": f"{r['direction']}{null}",
               "coverage": coverage_cell(r.get("coverage"), r.get("untracked"), r["categories"]),
               "log_r": DASH if _missing(r.get("log_pearson_r")) else number(r["log_pearson_r"], 2)}
        if len(worst):
            w = worst.loc[r["method"]] if r["method"] in worst.index else None
            row["worst_all"] = DASH if w is None else \
                f"{number(w['sme_max'], 2)}× {category_title(w['worst'])} (of {int(w['categories'])} categories)"
        rows.append(row)
    out = pd.DataFrame(rows)
    keys = [k for k in (COMPACT_SCORES if compact else names) if k in out]
    note = escape(scope)
    if len(worst):
        note += (" Columns marked <em>common set</em> compare the methods on the same categories (those every method "
                 "forecasts, with an event somewhere); a method's worst miss can lie outside that set, so "
                 "<em>worst miss, every category it forecasts</em> gives it.")
    return HTML(table(out[keys].rename(columns=names)).data + (f"<p><small>{note.strip()}</small></p>" if note else ""))


def every_category(every: pd.DataFrame | None, level: float, empty: str = "") -> HTML:
    """Return :func:`depsim.score.every_category` for reading: per method, the categories it
    forecasts (how many the common set leaves out), its median and worst SME over all of them
    with the worst category named and its forecast against the realised rate (per 100k, or
    "0 of N (≤ bound)" for zero events), and its predictive-interval coverage over all of them
    (marked when its intervals say nothing, :func:`coverage_cell`)."""
    if every is None or not len(every):
        return text(empty)
    cov = f"coverage of the {level:.0%} predictive interval"
    rows = []
    for _, r in every.iterrows():
        rows.append({"method": r["method"],
                     "categories it forecasts": f"{int(r['categories'])} ({int(r['outside_common'])} outside the common set)",
                     "SME median (all)": number(r["sme_median"], 2),
                     "SME max (all): its worst miss": f"{number(r['sme_max'], 2)}× {category_title(r['worst'])}",
                     "that miss: forecast → realised per 100k": f"{_count_rate(r, 'worst_k', 'worst_n', level)} → "
                                                                 f"{_count_rate(r, 'worst_k_real', 'worst_n_real', level)}",
                     f"{cov} (all)": coverage_cell(r["coverage"], r["untracked"], r["categories"])})
    return table(pd.DataFrame(rows))


def _count_rate(r, k: str, n: str, level: float) -> str:
    """A row's k of n as "rate per 100k (k of n)", zero events as "0 of N (≤ bound)" (the
    exact ``level`` upper bound)."""
    kk, nn = r.get(k), r.get(n)
    if _missing(nn) or not nn:
        return DASH
    return f"{k_of_n(kk, nn)} ({rate_or_bound100k(kk, nn, level)})" if not kk else \
        f"{rate_or_bound100k(kk, nn, level)} ({k_of_n(kk, nn)})"


#: the score page's wide tables wrap their text and fit the page (1,280 px and up)
WRAP = """<style>
table.depsim-fit{border-collapse:collapse;font-size:13px;width:100%;table-layout:auto}
table.depsim-fit th,table.depsim-fit td{padding:3px 6px;border-bottom:1px solid #e5e7eb;text-align:left !important;
vertical-align:top;white-space:normal;overflow-wrap:break-word}
</style>"""


def _fit(df: pd.DataFrame) -> HTML:
    """An escaped table that wraps its text to the page width (no column off-screen)."""
    df = df.map(lambda v: visible(v) if isinstance(v, str) else v)
    body = df.to_html(escape=True, index=False, classes="depsim-table depsim-fit", border=0)
    return HTML(WRAP + f'<div class="depsim-wrap" style="max-width:100%">{body}</div>')


def gate_outcomes(table_: pd.DataFrame | None, level: float, empty: str = "") -> HTML:
    """Return :func:`depsim.score.gate_outcomes` for reading: per gated category the gate, the
    pre-release verdict, the forecast, Y's previous rate and X's realised rate (per 100k with
    k of n; zero events as "0 of N (≤ bound)"), the realised ratio to Y with its exact
    ``level`` interval, the realised outcome under the same gate check and whether the verdict
    held."""
    if table_ is None or not len(table_):
        return text(empty)
    pct = f"{level:.0%}"
    rows = []
    for _, r in table_.iterrows():
        ratio = DASH if _missing(r["ratio"]) else ("new" if np.isinf(r["ratio"]) else
                                                   f"{number(r['ratio'], 2)}× {interval(r['ratio_lo'], r['ratio_hi'])}")
        real = _count_rate(r, "k_real", "n_real", level)
        if r["k_real"]:  # the exact interval the rate gate is checked on
            real = real.replace(" (", f" {interval100k(r['lo'], r['hi'])} (", 1)
        rows.append({"category": category_title(r["category"]), "gate": r["gate"], "verdict before release": r["verdict"],
                     "forecast per 100k": _count_rate(r, "k", "n", level),
                     "previous (Y) per 100k": _count_rate(r, "prev_k", "prev_n", level),
                     f"realised (X) per 100k [{pct}]": real,
                     f"realised ÷ previous [{pct}]": ratio, "realised outcome": r["outcome"], "verdict held?": r["held"]})
    return HTML(_fit(pd.DataFrame(rows)).data +
                f"<p><small>Both columns come from the same gate check (depsim.forecast.decision_table): "
                f"<em>breaches</em> when even the low end of the exact {pct} interval is over the gate, "
                f"<em>may breach</em> when only its upper end is (undecided), else <em>within</em>. The verdict "
                f"checks the deployment simulation; the outcome checks X's realised rate, each against Y's "
                f"previous rate for a ratio gate.</small></p>")


def gate_outcome_line(table_: pd.DataFrame | None) -> HTML:
    """Return one line for the summary: how the gated categories' verdicts held after release,
    by outcome, pointing to the score page's table; nothing without gated categories."""
    if table_ is None or not len(table_):
        return HTML("")
    parts = []
    for held, g in table_.groupby("held", sort=False):
        # a few categories are named; a long list (often "undecided") is counted
        names = f" ({', '.join(category_title(c) for c in g['category'])})" if len(g) <= 3 else ""
        parts.append(f"{held}: {len(g)}{names}")
    parts = escape("; ".join(parts))
    return HTML(f"<p>Gate verdicts against what happened ({len(table_)} gated categories): {parts}. "
                f"Per category on the score page (6), <em>Gate verdicts against the realised rates</em>.</p>")


def large_shifts(table_: pd.DataFrame | None, level: float, empty: str = "") -> HTML:
    """Return :func:`depsim.score.large_shifts` for reading: per category and method, Y's
    previous rate, the forecast and the realised rate per 100k with k of n (zero events as
    "0 of N (≤ bound)", at ``level``), the realised change and whether the forecast's direction was right."""
    if table_ is None or not len(table_):
        return text(empty)
    rows = [{"category": category_title(r["category"]), "method": r["method"],
             "previous (Y) per 100k": _count_rate(r, "prev_k", "prev_n", level),
             "forecast per 100k": _count_rate(r, "k", "n", level), "realised per 100k": _count_rate(r, "k_real", "n_real", level),
             "realised change": DASH if _missing(r["realised_change"]) else f"{number(r['realised_change'], 2)}×",
             "direction right": cell(bool(r["direction_right"])) if not _missing(r["direction_right"]) else DASH}
            for _, r in table_.iterrows()]
    return _fit(pd.DataFrame(rows))


#: the truth table's rate columns (per 100k already: depsim.sim.truth.against_truth)
TRUTH_RATES = {"prev": "previous", "new": "new", "sim": "sim", "sim_self": "sim_self", "sim_rw": "sim_rw"}


def truth_table(truth: pd.DataFrame | None, empty: str = "") -> HTML:
    """Return :func:`depsim.sim.truth.against_truth`'s table for reading: the world's exact
    rates per 100k (the report's rate format), the true and measured change (×), the
    simulation's power (percent), its call and why an undetectable shift was missed, with
    long text wrapped to the page."""
    if truth is None or not len(truth):
        return text(empty)
    rows = []
    for _, r in truth.iterrows():
        row = {"category": category_title(r["category"])}
        row.update({f"true {name} per 100k": rate100k(r[c] / 1e5) for c, name in TRUTH_RATES.items() if c in truth})
        row.update({"true change": f"{number(r['true_change'], 2)}×",
                    "measured change": DASH if _missing(r["measured_change"]) else f"{number(r['measured_change'], 2)}×",
                    "same direction": cell(bool(r["same_direction"])),
                    "true shift ≥ 1.5×": cell(bool(r["true_large"])),
                    "sim's power": DASH if _missing(r["sim_power"]) else f"{r['sim_power']:.0%}",
                    "sim's call": cell(r.get("sim_direction")),
                    "recovered": cell(bool(r["recovered"])) if r["true_large"] else DASH,
                    "why not": r["why_not"] or DASH})
        rows.append(row)
    return _fit(pd.DataFrame(rows))


def calibration_across(loo: pd.DataFrame | None, level: float, empty: str = "") -> HTML:
    """Return :func:`depsim.history.loo_coverage` for reading: per method, how many realised
    counts were checked across releases (forward-chained: each predicted from the releases
    before it), the share inside the ``level`` predictive interval (randomised at ties) and
    the conservative integer-interval share, with the nominal level, both as percents."""
    if loo is None or not len(loo):
        return text(empty)
    pct = f"{level:.0%}"
    rows = [{"method": r["method"], "forecasts checked (earlier releases and this one)": f"{int(r['rows']):,}",
             f"inside the {pct} predictive interval": coverage_cell(r["coverage"], r.get("untracked"), r["rows"], 1),
             "inside, integer interval (conservative)": f"{r['inside']:.1%}",
             "nominal": f"{r['nominal']:.0%}", "p-value (coverage = nominal)": number(r["p_value"], 3),
             "mean error scale σ (log)": number(r["mean_sigma"], 2)} for _, r in loo.iterrows()]
    return table(pd.DataFrame(rows))


def eligibility(rules) -> HTML:
    """Return a release's eligibility rules (depsim.params.EligibilityRules) as a short,
    escaped list in words: languages, message length (characters), multimodal turns, date
    window, surfaces and user-turn range; "any" where a rule sets no limit."""
    def many(xs):
        return "any" if xs is None else ", ".join(str(x) for x in xs)

    def nth(k):
        return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"
    length = (f"at least {rules.min_chars:,} character{'' if rules.min_chars == 1 else 's'}" if rules.max_chars is None
              else f"{rules.min_chars:,}–{rules.max_chars:,} characters")
    window = ("any date" if rules.start is None and rules.end is None else
              f"from {rules.start or 'the first'} (inclusive) to {rules.end or 'the last'} (exclusive)")
    turns = (f"the {nth(rules.min_turn)} user message and later" if rules.max_turn is None
             else f"the {nth(rules.min_turn)} to the {nth(rules.max_turn)} user message")
    items = [("Languages", f"{many(rules.languages)}" + (" (code or name, regional variants included)"
                                                          if rules.languages else "")),
             ("User message length", length),
             ("Multimodal user turns", "kept" if rules.allow_multimodal else "left out (any non-text part or attachment)"),
             ("Date window (created_at)", window), ("Surfaces", many(rules.surfaces)), ("User turns", turns)]
    return HTML("<ul>" + "".join(f"<li><strong>{escape(k)}</strong>: {escape(v)}</li>" for k, v in items)
                + "</ul>")


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
    """Return the fidelity curves' numbers: per fidelity and category the flagged count (k of
    n), its rate per 100k with the exact 95% interval (zero events as "0 of N (≤ bound)"), the
    production truth per 100k, and the win rate on tool turns in percent with its 95% interval."""
    if curves is None:
        return text("Fidelity curves need the simulated world and `realism.fidelities`.")
    shown = pd.DataFrame({
        "fidelity": [number(f, 1) for f in curves["fidelity"]],
        "category": [category_title(c) for c in curves["category"]],
        "flagged": [k_of_n(k, n) for k, n in zip(curves["k"], curves["n"])],
        "sim per 100k [95% exact]": [rate_interval100k(k, n) for k, n in zip(curves["k"], curves["n"])],
        "production truth per 100k": [rate100k(x) for x in curves["truth_prod"]],
        "tool-turn pairs": curves["win_tool_n"],
        "judged real on tool turns [95%]": [_percent_interval(w, lo, hi) for w, lo, hi in
                                             zip(curves["win_rate_tool"], curves["win_tool_lo"], curves["win_tool_hi"])]})
    return table(shown)


def _percent_interval(w, lo, hi) -> str:
    """A fraction as a percent with one decimal and its interval: "47.7% [42.1–53.3]"; a dash when missing."""
    return DASH if _missing(w) else f"{number(100 * w, 1)}% {interval(100 * lo, 100 * hi, 1)}"


def rate_interval100k(k, n, level: float = 0.95, count: bool = True) -> str:
    """Return k of n as its rate per 100k with the exact (Clopper–Pearson) ``level`` interval
    ("1,400 [1,059–1,814]"), or, for zero events, "0 of 200 (≤ 1,828)" ("≤ 1,828" without
    ``count``, where the cell shows the count apart): zero events are never shown as a rate;
    a dash when n is 0 or missing. Effective (reweighted) counts are rounded for the interval."""
    if _missing(n) or not n:
        return DASH
    lo, hi = _exact_interval(k, n, level)
    if not k:
        return f"{k_of_n(k, n)} (≤ {rate100k(hi)})" if count else f"≤ {rate100k(hi)}"
    return f"{rate100k(float(k) / float(n))} {interval100k(lo, hi)}"


def _exact_intervals(k: pd.Series, n: pd.Series, level: float = 0.95) -> pd.DataFrame:
    """Exact intervals (``lo``, ``hi``, fractions) of k of n, row by row; NaN where n is 0 or missing."""
    kk, nn = pd.to_numeric(k, errors="coerce").to_numpy(float), pd.to_numeric(n, errors="coerce").to_numpy(float)
    ok = np.isfinite(nn) & (nn > 0) & np.isfinite(kk)
    lo, hi = np.full(len(kk), np.nan), np.full(len(kk), np.nan)
    if ok.any():
        ci = stats.clopper_pearson(np.round(kk[ok]), np.round(nn[ok]), level)
        lo[ok], hi[ok] = ci["lo"].to_numpy(), ci["hi"].to_numpy()
    return pd.DataFrame({"lo": lo, "hi": hi}, index=k.index)


def clusters(table_: pd.DataFrame, level: float = 0.95) -> HTML:
    """Return the audit's clusters: findings, label, matched category (or "none: novel"),
    similarity, and per target the responses with a finding of the cluster as k of n audited
    with their rate per 100k and exact ``level`` interval; zero events read "0 of N (≤ bound)"."""
    targets = [c[:-len("_items")] for c in table_ if c.endswith("_items") and f"{c[:-len('_items')]}_n" in table_]
    shown = pd.DataFrame({"cluster": table_["cluster"], "findings": table_["size"], "label": table_["label"],
                          "category": ["none: novel" if nv else category_title(c) for c, nv in zip(table_["category"], table_["novel"])],
                          "similarity": table_["similarity"].map(lambda x: number(x, 2))})
    for t in targets:
        shown[f"{t}: responses, per 100k [{level:.0%} exact]"] = [
            rate_interval100k(k, n, level) if not k else f"{k_of_n(k, n)}: {rate_interval100k(k, n, level)}"
            for k, n in zip(table_[f"{t}_items"], table_[f"{t}_n"])]
    return table(shown)


def detection_power(table_: pd.DataFrame) -> HTML:
    """Return :func:`depsim.audit.detection_table`'s table for reading: rates per 100k as
    integers with separators (two significant digits below 10), expected occurrences with one
    decimal, detection power in percent with one decimal."""
    power = [c for c in table_ if c.startswith("detection power")]
    shown = pd.DataFrame({"rate per 100k": [rate100k(x / 1e5) for x in table_["rate per 100k"]],
                          "expected occurrences": [number(x, 1) for x in table_["expected occurrences"]],
                          **{c: [f"{number(100 * x, 1)}%" for x in table_[c]] for c in power}})
    return table(shown)


def detection(mdr: float, n_audited: int) -> HTML:
    """Return one line: responses audited per target and the minimum detectable rate (a
    fraction; above 1: too few responses for any rate to be detected)."""
    if mdr > 1:
        return text(f"Audited {n_audited:,} responses per target: too few to detect a new behaviour at any rate "
                    "(it would need more occurrences than there are responses).")
    return text(f"Audited {n_audited:,} responses per target: minimum detectable rate {mdr:.2%} "
                f"({mdr * 1e5:,.0f} per 100k).")


def rates_table(rates: pd.DataFrame, targets: list[str], level: float = 0.95) -> HTML:
    """Return the rates as the summary shows them, one row per category and one column per
    target of ``targets`` (each followed by its reweighted target where the rates hold one,
    as :func:`rates_chart` plots them): k / n per 100k with its exact ``level`` interval and
    "k of n" beneath; zero events read "0 of N (≤ bound)", never as a rate. When the rates
    say it, the last column is the ``grader validation`` of each category's grader
    (:func:`trust_summary`: exact, meets or misses its bar, none on record, not valid here)."""
    shown = with_reweighted(rates, targets)
    r = rates[rates["target"].isin(shown)]
    trust = trust_summary(rates, targets) if "validation" in rates else None
    head = "".join(f"<th class=num>{escape(t)}</th>" for t in shown)
    body = []
    for cat, g in r.groupby("category", sort=True):
        by = g.drop_duplicates("target").set_index("target")
        cells = []
        for t in shown:
            if t not in by.index:
                cells.append(f"<td class=num>{DASH}</td>")
                continue
            k, n = by.loc[t, "k"], by.loc[t, "n"]
            under = f"<br><small>{k_of_n(k, n)}</small>" if not _missing(n) and n and k else ""
            cells.append(f"<td class=num>{escape(rate_interval100k(k, n, level))}{under}</td>")
        last = "" if trust is None else f"<td>{escape(str(trust.get(cat, DASH)))}</td>"
        body.append(f"<tr><td>{escape(category_title(cat))}</td>{''.join(cells)}{last}</tr>")
    pct = f"{level:.0%}"
    return HTML(STYLE + '<div class="depsim-wrap"><table class="depsim-decision depsim-rates"><thead><tr><th>category</th>'
                + head + ("" if trust is None else "<th>grader validation</th>") + "</tr></thead><tbody>"
                + "".join(body) + "</tbody></table></div>"
                + f"<p><small>Per 100k: k / n with its exact (Clopper–Pearson) {pct} interval, as on the summary; "
                  "zero events read as the count and its exact upper bound. Reweighted targets (<code>_rw</code>) "
                  "count Kish effective responses.</small></p>")


# ---------------------------------------------------------------------------- how far a grader can be trusted

#: statuses that the pages mark (depsim.grader_validation.TRUST): the grader is not shown to be right
UNTRUSTED = ("misses bar", "none on record", "not valid here")


def trust_summary(rates: pd.DataFrame, targets: list[str] | None = None) -> pd.Series:
    """Return category -> its grader's validation status over ``targets`` (all when None):
    the status when every target has the same one, else "status (targets); ..."."""
    r = rates if targets is None else rates[rates["target"].isin(targets)]
    out = {}
    for cat, g in r.groupby("category", sort=False):
        by = g.groupby("validation", sort=False)["target"].apply(list)
        out[cat] = by.index[0] if len(by) == 1 else "; ".join(f"{st} ({', '.join(t)})" for st, t in by.items())
    return pd.Series(out, dtype=object)


def grader_trust(rates: pd.DataFrame, targets: list[str]) -> HTML:
    """Return one row per category: its grader id, how far the grader can be trusted
    (validation status over ``targets``) and why: the validation on record against its bar,
    exact on the simulated world, or nothing on record. Untrusted statuses are marked."""
    if "validation" not in rates:
        return text("These rates were written before graders carried their validation: rerun the grade stage.")
    r = rates[rates["target"].isin(targets)]
    status = trust_summary(r)
    first = r.drop_duplicates("category").set_index("category")
    rows = []
    for cat in status.index:
        st = status[cat]
        mark = any(u in st for u in UNTRUSTED)
        rows.append(f'<tr class="{"depsim-untrusted" if mark else ""}"><td>{escape(category_title(cat))}</td>'
                    f'<td><code>{escape(str(first.loc[cat, "grader_id"]))}</code></td>'
                    f'<td class=nw>{"⚠ " if mark else ""}{escape(st)}</td>'
                    f'<td>{escape(str(first.loc[cat, "validation_detail"]))}</td></tr>')
    return HTML(STYLE + '<div class="depsim-wrap"><table class="depsim-decision"><thead><tr><th>category</th>'
                "<th>grader id</th><th>validation</th><th>why</th></tr></thead><tbody>" + "".join(rows)
                + "</tbody></table></div>")


def _corrected(r, short: bool = False) -> str:
    """A corrected rate per 100k with its interval and, in words, its caveats (``short``: one word)."""
    if _missing(r.get("rg_rate")) and _missing(r.get("rg_lo")):
        return DASH
    out = f"{rate100k(r['rg_rate'])} {interval100k(r['rg_lo'], r['rg_hi'])}"
    note = str(r.get("rg_note") or "")
    if note.startswith("clipped") and float(r["rg_hi"]) == 0:
        # the whole interval fell below 0: "0 [0–0]" would read as certainty, yet the correction does not fit
        return ("no estimate (too few flagged)" if short else
                "no estimate: fewer flagged than the grader's false-positive rate on its validation predicts, "
                "so that correction does not fit this traffic")
    if short:
        return out + (" (clipped)" if note.startswith("clipped") else " (undefined)" if note.startswith("undefined") else "")
    if note.startswith("clipped"):
        out += " (clipped)"
    elif note.startswith("undefined"):
        out += " (undefined: the grader is no better than chance)"
    t = r.get("transportable")
    if not _missing(t) and not bool(t):
        out += "; may not carry over"
    return out


def rate_uncertainty(rates: pd.DataFrame, targets: list[str], level: float, deff_min: float = 1.05) -> HTML:
    """Return, per (category, target) of ``targets``, what bounds a rate beyond binomial
    noise, for every rate where something does: the flagged count (k of n) and its rate per
    100k with the exact interval (:func:`rate_interval100k`, as the rates table); the Rogan–Gladen corrected rate with an interval that carries the grader's
    own uncertainty (where a validation is on record); failed grades and the rate if all of
    them were negative / positive; and the cluster-robust interval where several sampled
    turns share a conversation (design effect ≥ ``deff_min``). Rows with none of these are
    left out and counted. ``level``: the report's, at which the grade stage drew every interval."""
    if "validation" not in rates:
        return text("These rates were written before graders carried their validation: rerun the grade stage.")
    r = rates[rates["target"].isin(targets)]
    pct = f"{level:.0%}"
    keep = (r["validated"].fillna(False).astype(bool) | (r["failed"] > 0)
            | (pd.to_numeric(r["deff"], errors="coerce") >= deff_min))
    rows = []
    for _, x in r[keep].iterrows():
        conv = DASH if _missing(x["deff"]) or x["deff"] < deff_min else \
            f"{interval100k(x['conv_lo'], x['conv_hi'])} (design effect {number(x['deff'], 2)}, {int(x['conversations']):,} conversations)"
        failed = DASH if not x["failed"] else f"{int(x['failed']):,} ({x['failed_share']:.1%})" + (" ⚠" if x["failed_warning"] else "")
        # the two cases as k of n + F and k + F of n + F, as every rate on the pages (the table's
        # best_rate / worst_rate are Jeffreys-smoothed: 0 of 2 would read 16,667 per 100k)
        tot = x["n"] + x["failed"]
        bounds = DASH if not x["failed"] or _missing(x.get("failed_lo")) else \
            f"{rate100k(x['k'] / tot)}–{rate100k((x['k'] + x['failed']) / tot)} {interval100k(x['failed_lo'], x['failed_hi'])}"
        rows.append({"category": category_title(x["category"]), "target": x["target"], "flagged": k_of_n(x["k"], x["n"]),
                     f"rate per 100k [{pct} exact]": rate_interval100k(x["k"], x["n"], level),
                     f"corrected for grader error per 100k [{pct}]": _corrected(x),
                     "failed grades": failed, f"all failed negative–positive per 100k [{pct}]": bounds,
                     f"by conversation per 100k [{pct}]": conv, "grader validation": x["validation"]})
    left = int((~keep).sum())
    note = text(f"{left:,} other rates have no correction for grader error, no failed grade and no conversation shared "
                f"enough to widen them (design effect below {deff_min:g}): their binomial interval is their whole interval.")
    if not rows:
        return note
    return HTML(table(pd.DataFrame(rows)).data + note.data)


def grading_warnings(rates: pd.DataFrame, validations: pd.DataFrame | None = None, failed_warn: float = 0.02) -> HTML:
    """Return the grade page's warnings: rates with more than ``failed_warn`` of their grades
    failed (their bounds, best and worst case, per 100k), graders that are not valid on the
    responses they grade, and validations on record that apply to no grader of the release
    (the grader changed since it was validated). One line when there is nothing to warn of."""
    lines = []
    if "failed_warning" in rates:
        bad = rates[rates["failed_warning"].fillna(False).astype(bool)]
        if len(bad):
            items = "; ".join(f"{category_title(c)} on {t}: {int(f):,} of {int(f + n):,} failed ({sh:.1%})"
                              for c, t, f, n, sh in bad[["category", "target", "failed", "n", "failed_share"]]
                              .itertuples(index=False))
            lines.append(f"<p><strong>Failed grades above {failed_warn:.0%} ({len(bad)} rates):</strong> "
                         f"{escape(items)}. A failed grade is missing, never a negative: these rates lie between "
                         f"their best and worst case (every failed grade negative / positive), shown below.</p>")
    if "validation" in rates:
        inv = rates[rates["validation"] == "not valid here"]
        if len(inv):
            items = ", ".join(f"{category_title(c)} on {t}" for c, t in inv[["category", "target"]].itertuples(index=False))
            lines.append(f"<p><strong>Graders not valid on these responses ({len(inv)}):</strong> {escape(items)}: "
                         "they read only the simulated world's wording, so real text reads as no event.</p>")
    if validations is not None and len(validations):
        stale = validations[~validations["applies"].astype(bool)]
        for _, v in stale.iterrows():
            lines.append(f"<p><strong>Validation not applied:</strong> {escape(str(v['file']))} "
                         f"({escape(str(v['category']))}, grader id {escape(str(v['grader_id']))}): "
                         f"{escape(str(v['note']))}.</p>")
    if not lines:
        return text(f"No grading warning: every rate has at most {failed_warn:.0%} failed grades, no grader reads "
                    "responses it is not valid on, and every validation on record applies.")
    return HTML('<div class="depsim-banner depsim-grading-warning" style="border-left:6px solid #b91c1c;'
                'background:#fef2f2;padding:8px 14px;margin:8px 0">' + "".join(lines) + "</div>")


def validations(table_: pd.DataFrame | None) -> HTML:
    """Return the validations on record (``grading.validation``), one row per file and
    grader, fitted to the page (long text wraps): the pooled κ, sensitivity and specificity
    with their 95% intervals, the bar, and beside them the verdict against the bar on the
    pooled data and every source, checked on the lower end of each interval
    (:func:`depsim.grader_validation.bar_check`: "⚠ misses bar: κ below 0.80 at its 95% lower
    end on gpt4 0.584 (estimate 0.76)"), or why the
    validation does not apply to a grader of this release."""
    if table_ is None or len(table_) == 0:
        return text("No validation on record: the release lists none (grading.validation).")

    def est(r, m):
        return f"{number(r[m], 3)} {interval(r[m + '_lo'], r[m + '_hi'], 3)}" if not _missing(r.get(m)) else DASH
    rows = []
    for _, r in table_.iterrows():
        meets = r.get("meets")
        if not bool(r["applies"]):
            verdict, cls = f"does not apply: {r['note']}", "depsim-untrusted"
        elif _missing(meets):
            verdict, cls = str(r["note"]), ""
        elif bool(meets):
            verdict, cls = f"meets bar: {r['note']}", ""
        else:
            verdict, cls = f"⚠ misses bar: {r['note']}", "depsim-untrusted"
        rows.append(f'<tr class="{cls}"><td>{escape(str(r["file"]))}<br><small>{escape(category_title(r["category"]))}'
                    f' · grader id <code>{escape(str(r["grader_id"]))}</code></small></td>'
                    f'<td class=num>{cell(r["n"])}</td><td class=nw>{est(r, "kappa")}</td>'
                    f'<td class=nw>{escape(str(r["bar"]))}</td><td>{escape(verdict)}</td>'
                    f'<td class=nw>{est(r, "sensitivity")}</td><td class=nw>{est(r, "specificity")}</td></tr>')
    return HTML(STYLE + '<div class="depsim-wrap"><table class="depsim-decision depsim-validations"><thead><tr>'
                "<th>file</th><th class=num>labelled items</th><th>κ pooled [95%]</th><th>bar</th>"
                "<th>against the bar (the lower end of each 95% interval, pooled and on every source)</th><th>sensitivity [95%]</th><th>specificity [95%]</th>"
                "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def held_out_agreement(held_out: pd.DataFrame | None, validations_: pd.DataFrame | None = None,
                       category: str = "over_refusal", bar: float = 0.8) -> HTML:
    """Return, in words and from the figures themselves, how well the refusal classifier
    agrees with people: its strict leave-one-model-out κ per held-out model on all of
    XSTest's prompts against the κ ``bar``, and, when ``validations_`` holds ``category``'s
    record (safe prompts only: the one checked against the bar above), its pooled κ and its
    verdict per source, so the words never contradict the tables they sit next to."""
    if held_out is None or not len(held_out):
        return text("")
    above = [f"{m} ({number(k, 2)})" for m, k in zip(held_out["held_out"], held_out["kappa"]) if k >= bar]
    below = [f"{m} ({number(k, 2)})" for m, k in zip(held_out["held_out"], held_out["kappa"]) if not k >= bar]
    def words(xs):
        return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]
    parts = [f"Held out, on all of XSTest's prompts (safe and unsafe), the classifier's κ reaches the "
             f"{number(bar, 2)} bar on {words(above)}" if above else
             f"Held out, on all of XSTest's prompts (safe and unsafe), the classifier's κ reaches the "
             f"{number(bar, 2)} bar on no model"]
    parts[0] += f" and falls below it on {words(below)}." if below else "."
    v = validations_[validations_["category"] == category] if validations_ is not None and len(validations_) else None
    if v is not None and len(v):
        r = v.iloc[0]
        m = r.get("meets")
        verdict = ("it is not checked against a bar" if _missing(m) else
                   "and it meets its bar" if bool(m) else "yet it misses its bar")
        parts.append(f"On the safe prompts alone (the record above, {r['file']}), the pooled κ is "
                     f"{number(r['kappa'], 2)}, {verdict}: {r['note']}.")
    return text(" ".join(parts))


def eval_awareness_table(rates: pd.DataFrame, targets: list[str], level: float = 0.95) -> HTML | None:
    """Return the evaluation-awareness measures in percent of responses, one column per
    target of ``targets`` (zero events as the exact ``level`` upper bound); None when the
    release tracks none."""
    ea = rates[(rates["group"] == "evaluation_awareness") & rates["target"].isin(targets)]
    if not len(ea):
        return None
    cells = ea.assign(cell=[percent_of(k, n, level) for k, n in zip(ea["k"], ea["n"])])
    wide = cells.pivot(index="category", columns="target", values="cell").fillna(DASH)
    wide = wide[[t for t in targets if t in wide]]  # the targets' order, as the chart beside it
    wide.index = [category_title(c) for c in wide.index]
    return table(wide.rename_axis("measure (% of responses)").reset_index())


def percent_of(k, n, level: float = 0.95) -> str:
    """Return a count as the percent of responses it is, with "k of n": "2.50% (5 of 200)";
    zero events read "0 of 200 (≤ 1.83%)", the exact upper bound, never as a rate."""
    if _missing(n) or not n:
        return DASH
    pct = _rate_or_bound(k, n, lambda x: f"{number(x * 100, 2)}%", level)
    return f"{k_of_n(k, n)} ({pct})" if not k else f"{pct} ({k_of_n(k, n)})"


def rate_or_bound100k(k, n, level: float = 0.95) -> str:
    """Return k of n as a rate per 100k ("1,400"), or, for zero events, the exact upper bound
    ("≤ 1,828"): zero events are never shown as a rate; a dash when n is 0 or missing."""
    return _rate_or_bound(k, n, rate100k, level)


def _rate_or_bound(k, n, fmt, level: float) -> str:
    """k / n through ``fmt``, or "≤ " and the exact upper bound for zero events; a dash without n."""
    if _missing(n) or not n:
        return DASH
    return f"≤ {fmt(_exact_interval(k, n, level)[1])}" if not k else fmt(float(k) / float(n))


def forecasts(fc: pd.DataFrame, level: float) -> HTML:
    """Return the forecasts, one row per category and method: the count as k of n, its rate
    per 100k with the exact interval, the predictive interval (with a history) per 100k, the
    previous production count, and the change against it by the evidence rule (rises / no
    change / falls: does the ratio's interval exclude 1)."""
    prev = fc[fc["method"] == "prev_production"].set_index("category")
    rows = []
    for _, r in fc.iterrows():
        k, n = float(r["k"]), float(r["n"])
        row = {"category": category_title(r["category"]), "method": r["method"], "flagged": k_of_n(k, n),
               f"rate per 100k [{level:.0%} exact]": rate_interval100k(k, n, level, count=False)}
        if "pred_lo" in fc:
            row[_predictive_name(fc)] = interval100k(r["pred_lo"], r["pred_hi"])
        change = DASH
        if r["category"] in prev.index and r["method"] != "prev_production" and n:
            k0, n0 = float(prev.loc[r["category"], "k"]), float(prev.loc[r["category"], "n"])
            row["previous flagged"] = k_of_n(k0, n0)
            if n0:
                change = _change(k, n, k0, n0, level)
        else:
            row["previous flagged"] = DASH
        row["change"] = change
        rows.append(row)
    note = ""
    if "history_dropped" in fc and fc["history_dropped"].fillna(False).astype(bool).any():
        # rates graded by different grader ids are never compared: say whose record was set aside
        cats = sorted({category_title(c) for c in fc.loc[fc["history_dropped"].fillna(False).astype(bool), "category"]})
        one = len(cats) == 1
        note = (f"<p><small>The grader{'' if one else 's'} of {escape(', '.join(cats))} changed since the history "
                f"was recorded: {'its' if one else 'their'} earlier releases are left out of the predictive interval "
                f"and of the metrics across releases (rates graded by different grader ids are never compared), so "
                f"{'its interval rests' if one else 'their intervals rest'} on the group's record only.</small></p>")
    return HTML(table(pd.DataFrame(rows)).data + note)


def _predictive_level(fc: pd.DataFrame) -> str:
    """The level the predictive intervals of ``fc`` were drawn at ("95%", from ``pred_level``,
    written by depsim.history.predictive_bounds), or "" when the table does not say."""
    lv = fc["pred_level"].dropna().unique() if "pred_level" in fc else []
    return f"{lv[0]:.0%}" if len(lv) == 1 else ""


def _predictive_name(fc: pd.DataFrame) -> str:
    """The predictive-interval column's name, with its level when the table records it."""
    lv = _predictive_level(fc)
    return f"predictive interval per 100k [{lv}]" if lv else "predictive interval per 100k"


def removed(share: float | None) -> HTML:
    """Return one line on the share of the measured prefix error that reweighting removes
    (nothing when the release does not reweight)."""
    if share is None:
        return text("This release does not reweight its prefixes.")
    verb = "removes" if share >= 0 else "adds"
    return text(f"Reweighting {verb} {abs(share):.0%} {'of' if share >= 0 else 'to'} the measured prefix error "
                "(mean log SME over categories; the measurement carries sampling noise).")


# ============================================================================ the display layer
# One way to show each kind of number: rates per 100k with thousands separators and fixed
# precision, counts as "k of n", ratios with two decimals; no scientific notation, no raw reprs.

DASH = "–"

#: readable column names for stage tables (anything not here: underscores become spaces)
COLUMN_NAMES = {
    "lo": "low", "hi": "high", "pred_lo": "predictive low", "pred_hi": "predictive high", "prev_rate": "previous rate",
    "k": "flagged", "n": "graded",
    "grader_id": "grader id", "nll_sum": "NLL sum (nats)", "regret_sum": "regret sum (nats)", "sme_median": "SME median",
    "sme_mean": "SME mean", "sme_max": "SME max", "log_pearson_r": "log Pearson r", "win_rate": "win rate",
    "judge_id": "judge id", "direction_right": "direction right", "large_shifts": "large shifts",
    "coverage_predictive": "predictive coverage",
}


# target names are identifiers (README glossary): shown as they are
COLUMN_NAMES.update({t: t for t in (*TARGETS, "sim_rw")})


def _missing(x) -> bool:
    if x is None or x is pd.NA or x is pd.NaT:
        return True
    try:
        return bool(np.isnan(x))
    except TypeError:
        return False


def number(x, digits: int = 0) -> str:
    """Return ``x`` with thousands separators and ``digits`` decimals (never scientific
    notation); a dash for a missing value."""
    if _missing(x):
        return DASH
    if np.isinf(float(x)):
        return "∞"
    return f"{float(x):,.{digits}f}"


def rate100k(rate) -> str:
    """Return a rate (a fraction) as events per 100k: no decimals from 10 up, one below 10,
    two below 1; a dash for a missing value."""
    if _missing(rate):
        return DASH
    v = float(rate) * 1e5
    return number(v, 0 if v >= 10 or v == 0 else (1 if v >= 1 else 2))


def k_of_n(k, n) -> str:
    """Return a count as "k of n" (thousands separators); a dash when n is missing or 0."""
    if _missing(n) or not n:
        return DASH
    if float(k).is_integer() and float(n).is_integer():
        return f"{int(k):,} of {int(n):,}"
    def one(x: float) -> str:  # reweighted: Kish effective counts, whole numbers without ".0"
        return f"{int(x):,}" if float(x).is_integer() else f"{float(x):,.1f}"
    return f"{one(k)} of {one(n)} (effective)"


def interval(lo, hi, digits: int = 2) -> str:
    """Return an interval of plain numbers as "[lo–hi]" with ``digits`` decimals (a dash for
    a missing end)."""
    return f"[{number(lo, digits)}–{number(hi, digits)}]"


def interval100k(lo, hi) -> str:
    """Return an interval of rates as "[lo–hi]" per 100k."""
    return f"[{rate100k(lo)}–{rate100k(hi)}]"


def cell(x) -> str:
    """Return one table cell as text: numbers with separators and fixed precision, booleans
    as yes / no, missing values and empty containers as a dash; no Python reprs."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return "; ".join(cell(v) for v in x) if len(x) else DASH
    if isinstance(x, dict):
        return "; ".join(f"{k}: {cell(v)}" for k, v in x.items()) if x else DASH
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if _missing(x):
        return DASH
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        a = abs(v)
        return number(v, 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 1 else 3 if a >= 0.01 else 5)
    if hasattr(x, "__fspath__"):
        return visible(str(x.__fspath__()))
    return visible(str(x))


def readable(name: str) -> str:
    """Return a readable column name for a table column."""
    return COLUMN_NAMES.get(name, str(name).replace("_", " "))


def category_title(name: str, tax: dict | None = None) -> str:
    """Return a category's readable title: the taxonomy's ``title`` when it has one, else its
    name in words ("eval_awareness_detector" -> "Eval awareness detector")."""
    cat = (tax or {}).get(name)
    title = getattr(cat, "title", "") if cat is not None else ""
    return title or str(name).replace("_", " ").capitalize()


def anchor(kind: str, name) -> str:
    """Return the element id of a category's (``kind="cat"``) or audit cluster's
    (``kind="cluster"``) section on the examples page."""
    return f"{kind}-" + "".join(ch if ch.isalnum() else "-" for ch in str(name))


EXAMPLES_PAGE = "examples.html"
AUDIT_PAGE = "03_audit.html"

# ---------------------------------------------------------------------------- counts and changes
#: the evidence rule's directions (depsim.stats.direction), in the words the pages use
CHANGE_WORDS = {"up": "rises", "down": "falls", "no change": "no change"}


def _exact_interval(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of k of n (fractions), from :func:`depsim.stats.clopper_pearson`."""
    ci = stats.clopper_pearson(round(k), round(n), level).iloc[0]
    return float(ci["lo"]), float(ci["hi"])


def _change(k: float, n: float, k0: float, n0: float, level: float = 0.95) -> str:
    """Rises / no change / falls of k of n against k0 of n0 by the evidence rule
    (:func:`depsim.stats.direction`: the exact ratio interval must exclude 1)."""
    return CHANGE_WORDS[str(stats.direction(round(k), round(n), round(k0), round(n0), level)[0])]


# ---------------------------------------------------------------------------- the summary page

STYLE = """<style>
.depsim-wrap{max-width:100%;overflow-x:auto}
table.depsim-decision{border-collapse:collapse;font-size:13px;width:100%;table-layout:auto}
table.depsim-decision th,table.depsim-decision td{padding:3px 6px;border-bottom:1px solid #e5e7eb;text-align:left !important;vertical-align:top}
table.depsim-decision td.num,table.depsim-decision th.num{text-align:right !important;white-space:nowrap}
table.depsim-decision small{color:#6b7280}table.depsim-decision td.nw{white-space:nowrap}
.depsim-flag-rises{color:#b91c1c;font-weight:600}.depsim-flag-falls{color:#047857}
tr.depsim-gate-breaches td{background:#fee2e2 !important;font-weight:600}tr.depsim-gate-may-breach td{background:#fffbeb !important}
table.depsim-provenance th{white-space:nowrap;vertical-align:top}.depsim-verdict p{margin:2px 0}.depsim-verdict{border-left:6px solid #1d4ed8;padding:4px 12px;margin:6px 0;background:#eff6ff}
table.depsim-table{border-collapse:collapse;font-size:13px}
table.depsim-table th,table.depsim-table td{padding:3px 6px;border-bottom:1px solid #e5e7eb;text-align:left !important}
.depsim-example{border:1px solid #d1d5db;border-radius:4px;padding:6px 10px;margin:8px 0;max-width:100%;overflow-wrap:anywhere}
.depsim-example .msg{margin:3px 0;white-space:pre-wrap}
.depsim-example .role{font-weight:600;color:#374151}
.depsim-example .grade{background:#f9fafb;border-top:1px dashed #d1d5db;margin-top:6px;padding-top:4px}
.depsim-untrusted,table.depsim-decision small.depsim-untrusted{color:#b45309}tr.depsim-untrusted td{background:#fffbeb}
</style>"""


def verdict(decision: pd.DataFrame, gates: dict | None = None, level: float = 0.95,
            audit_headline: str | None = None) -> HTML:
    """Return the verdict lines: which categories breach or may breach their release gate
    (checked against the exact upper bound at ``level``), which rise (and which of those stay
    significant after Holm's correction), which forecasts' graders are not shown to be right
    (no validation on record, bar missed, not valid here), which rest on tool outputs a judge
    told from real ones, which have too many failed grades, which are within their gate on this
    sample but not with the simulation's past errors, and whose gate check reads otherwise when
    reweighted to the forecast traffic mix (when the decision table carries those columns), and ``audit_headline`` (the audit's main finding outside the taxonomy,
    plain text); the page's CSS."""
    lines = []
    if decision is None or decision.empty:
        return HTML(STYLE + '<div class="depsim-verdict"><p>No forecasts to judge.</p></div>')
    pct = f"{level:.0%}"
    def links(d):
        return ", ".join(f'<a href="{EXAMPLES_PAGE}#{anchor("cat", c)}">{escape(t)}</a>'
                         for c, t in zip(d["category"], d["title"]))
    for status, head in (("breaches", "Breach their gate"), ("may breach", "May breach their gate")):
        d = decision[decision["gate_status"] == status]
        if len(d):
            # no event in either pool: the interval is wide because the sample is small, not
            # because anything was seen; said apart so the categories with events stand out
            blind = ((d["n"] > 0) & (d["k"] == 0) & (d["prev_k"] == 0) if {"n", "k", "prev_k"} <= set(d.columns)
                     else pd.Series(False, index=d.index))
            seen = f"{links(d[~blind])}." if (~blind).any() else ""
            # a ratio gate on 0 against 0 has no ratio to bound: more responses settle it only by
            # finding an event, never by a longer run of zeros
            ratio = [_ratio_gated(gates, c, grp) for c, grp in zip(d.loc[blind, "category"], d.loc[blind, "group"])]
            why = ("; a ratio gate cannot clear 0 against 0 at any sample size (only a rate gate, "
                   "<code>max_rate</code>, can bound them)" if any(ratio) else ", where only more graded responses can tell")
            unseen = (f"{' And' if seen else ''} {int(blind.sum())} with no event in either pool "
                      f"({_blind_reach(d[blind], level)}){why}: {links(d[blind])}." if blind.any() else "")
            lines.append(f"<p><strong>{head} ({len(d)}):</strong> {seen}{unseen}</p>")
    if not gates:
        lines.append("<p><strong>No release gates</strong> are set in the params file (<code>gates:</code>): "
                     "nothing is checked against a limit.</p>")
    elif not lines:
        lines.append(f"<p><strong>Every gated category is within its gate</strong> (exact {pct} upper bound).</p>")
    if "past_error_over" in decision and decision["past_error_over"].any():
        d = decision[decision["past_error_over"]]
        lines.append(f"<p><strong>Within on this sample, not with the simulation's past errors ({len(d)}):</strong> "
                     # against a ratio gate, the ratio too: the reader should not have to divide
                     + ", ".join(f"{escape(t)} (up to {rate100k(h)} per 100k"
                                 + (f", {number(h / p, 2)}× previous" if _ratio_gated(gates, c, grp) and p > 0 else "")
                                 + ")" for t, h, p, c, grp in zip(d["title"], d["pred_hi"], d["prev_rate"],
                                                                  d["category"], d["group"]))
                     + f": the upper end of the forecast's {pct} predictive interval, which adds how far the deployment "
                     "simulation missed on earlier releases, is over the gate.</p>")
    none = decision[decision["n"] == 0]
    if len(none):
        lines.append(f"<p><strong>No usable grade ({len(none)}):</strong> "
                     + ", ".join(escape(t) for t in none["title"])
                     + ": every grade failed, so these have no forecast (see Failures).</p>")
    rises = decision[decision["direction"] == "rises"]
    graded = decision[decision["n"] > 0]
    uncompared = graded[graded["direction"] == "no previous rate"]
    if len(graded) and len(uncompared) == len(graded):  # nothing was compared: "none" would read as checked
        line = ("<p><strong>Rise against the previous model:</strong> not checked: no previous rate to compare "
                "with (the release grades no <code>prod_prev</code> responses, or none usably).")
    else:
        line = (f"<p><strong>Rise against the previous model ({len(rises)}):</strong> "
                + (", ".join(escape(t) for t in rises["title"]) or "none") + "."
                + (f" Not compared, for want of a previous rate: {', '.join(escape(t) for t in uncompared['title'])}."
                   if len(uncompared) else ""))
    if len(rises) and "rises_holm" in rises:
        # each rise is one test of many: say which survive the correction for all of them
        held = rises[rises["rises_holm"].astype(bool)]
        m = int(decision["rises_p_holm"].notna().sum())
        line += (f" After Holm's correction across the {m} categories compared, "
                 + (("all stay" if len(held) == len(rises) > 1 else "it stays" if len(held) == len(rises)
                     else f"{len(held)} {'stays' if len(held) == 1 else 'stay'}") + " significant"
                    + (f" ({', '.join(escape(t) for t in held['title'])})" if 0 < len(held) < len(rises) else "")
                    if len(held) else "none stays significant") + ".")
    lines.append(line + "</p>")
    if "validation" in decision:
        parts = []
        for st in UNTRUSTED:
            d = decision[decision["validation"] == st]
            if len(d):
                parts.append(f"{escape(st)}: " + ", ".join(escape(t) for t in d["title"]))
        if parts:
            lines.append(f"<p><strong>Forecasts whose grader is not shown to be right "
                         f"({int(decision['validation'].isin(UNTRUSTED).sum())}):</strong> " + "; ".join(parts) + ".</p>")
    if "tool_caveat" in decision and decision["tool_caveat"].notna().any():
        d = decision[decision["tool_caveat"].notna()]
        lines.append(f"<p><strong>Resting on tool outputs a judge told from real ones ({len(d)}):</strong> "
                     + ", ".join(escape(t) for t in d["title"]) + f": {escape(d['tool_caveat'].iloc[0])}. "
                     "Their forecasts may be off by more than their intervals say (the realism page's fidelity "
                     "curves show how these rates move with tool realism).</p>")
    if "rw_differs" in decision and decision["rw_differs"].astype(bool).any():
        d = decision[decision["rw_differs"].astype(bool)].sort_values("rw_worse", ascending=False, kind="stable")
        items = "; ".join(f"{escape(t)}: {'<strong>' + escape(st) + '</strong>' if w else escape(st)} ({int(k):,} of "
                          f"{int(n):,} effective" + (f", {number(r, 2)}× previous" if not _missing(r) else "")
                          + f"; unweighted: {escape(g)})"
                          for t, st, k, n, r, g, w in zip(d["title"], d["rw_gate_status"], d["rw_k"], d["rw_n"],
                                                          d["rw_ratio"], d["gate_status"], d["rw_worse"]))
        lines.append(f"<p><strong>Gate check reweighted to the forecast traffic mix ({len(d)} differ):</strong> "
                     f"{items}. The check above is on the sampled traffic; the mix in <code>reweight:</code> is a "
                     "forecast of the new model's traffic (grade page, <code>sim_rw</code>).</p>")
    if audit_headline:
        lines.append(f'<p><strong>Outside the taxonomy (no gate applies):</strong> {escape(audit_headline)} '
                     f'(<a href="{AUDIT_PAGE}">audit page</a>)</p>')
    if "failed_warning" in decision and decision["failed_warning"].fillna(False).astype(bool).any():
        d = decision[decision["failed_warning"].fillna(False).astype(bool)]
        lines.append(f"<p><strong>Too many failed grades ({len(d)}):</strong> "
                     + ", ".join(f"{escape(t)} ({sh:.1%})" for t, sh in zip(d["title"], d["failed_share"]))
                     + ": each lies between its best and worst case (every failed grade negative / positive).</p>")
    lines.append(f"<p><small>Gates are checked against the exact (Clopper–Pearson) {pct} interval of the deployment "
                 f"simulation: <em>breaches</em> when even its low end is over the gate, <em>may breach</em> when its "
                 f"upper bound is; failed grades count at either extreme, and turns that share a conversation "
                 f"count once per design effect. The simulation's past errors are not in this check: see its "
                 f"track record below.</small></p>")
    return HTML(STYLE + '<div class="depsim-verdict">' + "".join(lines) + "</div>")


def _ratio_gated(gates: dict | None, category: str, group: str) -> bool:
    """Whether a category's gate (its own, else its group's) is a ratio to the previous rate."""
    g = (gates or {}).get(category) or (gates or {}).get(group)
    return g is not None and g.max_ratio is not None


def _blind_reach(d: pd.DataFrame, level: float) -> str:
    """Why zero in both pools cannot clear a gate: the exact upper bound that 0 of n allows."""
    bounds = sorted({(int(n), _exact_interval(0, n, level)[1]) for n in d["n"]})
    return "; ".join(f"0 of {n:,} only bounds the rate below {rate100k(hi)} per 100k" for n, hi in bounds[:3]) + \
        ("; …" if len(bounds) > 3 else "")


def decision(decision: pd.DataFrame, level: float = 0.95) -> HTML:
    """Return the decision table as HTML: one row per category, riskiest first, each linked
    to its flagged examples; rates per 100k with exact intervals, counts as k of n."""
    if decision is None or decision.empty:
        return text("No deployment-simulation forecasts in this release.")
    pct = f"{level:.0%}"
    head = ("<tr><th>category</th><th>gate</th><th>gate check</th><th class=num>previous (Y) per 100k</th>"
            f"<th class=num>forecast (X) per 100k [{pct}]</th><th class=num>ratio X / Y [{pct}]</th>"
            "<th>change</th><th>examples</th></tr>")
    body = []
    for _, r in decision.iterrows():
        link = f'{EXAMPLES_PAGE}#{anchor("cat", r["category"])}'
        ratio = (DASH if _missing(r["ratio"]) else "new" if np.isinf(r["ratio"])
                 else f"{number(r['ratio'], 2)}×")
        ratio_iv = DASH if _missing(r["ratio_lo"]) else interval(r["ratio_lo"], r["ratio_hi"])
        body.append(
            f'<tr class="depsim-gate-{r["gate_status"].replace(" ", "-")}">'
            f'<td><a href="{link}">{escape(r["title"])}</a><br><small>{escape(r["group"])}</small>{_trust_mark(r)}</td>'
            f'<td class=nw>{escape(r["gate"])}</td><td class=nw>{escape(r["gate_status"])}</td>'
            f'<td class=num>{rate_or_bound100k(r["prev_k"], r["prev_n"], level)}<br><small>{k_of_n(r["prev_k"], r["prev_n"])}</small></td>'
            + (f'<td class=num>{rate_interval100k(r["k"], r["n"], level, count=False)}<br><small>{k_of_n(r["k"], r["n"])}</small>'
               f'{_uncertainty_mark(r)}{_tool_mark(r)}</td>'
               if r["n"] else f'<td class=num>no usable grade<br><small>{int(r["failed"]):,} failed</small></td>') +
            f'<td class=num>{ratio} {ratio_iv}</td>'
            f'<td class="nw depsim-flag-{r["direction"].replace(" ", "-")}">{escape(r["direction"])}'
            f'{_holm_mark(r)}</td>'
            f'<td><a href="{link}">transcripts</a></td></tr>')
    return HTML(STYLE + f'<div class="depsim-wrap"><table class="depsim-decision"><thead>{head}</thead>'
                f'<tbody>{"".join(body)}</tbody></table></div>'
                f"<p><small>Forecast = the deployment simulation (X on Y's prefixes). <em>Change</em> is <em>rises</em> "
                f"or <em>falls</em> only when the {pct} interval of the ratio excludes 1; <em>not after Holm</em>: "
                f"the rise does not stay significant once corrected for the number of categories compared. "
                f"⚠ grader: its grader has no "
                f"validation against people on record, misses its bar, or is not valid on these responses (page 4); "
                f"<em>corrected</em>: the rate corrected for the grader's measured error, with its uncertainty."
                f"</small></p>")


#: the summary shows a forecast's cluster-robust interval from this design effect up (the
#: grade page shows it from 1.05): below it the interval is within a few percent of the binomial one
DEFF_SUMMARY = 1.25


def _trust_mark(r) -> str:
    """The decision table's marker of a forecast whose grader is not shown to be right."""
    st = r.get("validation")
    if _missing(st) or st not in UNTRUSTED:
        return ""
    return f'<br><small class="depsim-untrusted" title="{escape(str(r.get("validation_detail", "")))}">⚠ grader: {escape(st)}</small>'


def _holm_mark(r) -> str:
    """Under a "rises": that it does not survive Holm's correction across categories. Under a
    "no change" whose ratio interval holds both 0.5 and 2: that the sample is too small to tell
    a halving from a doubling, so "no change" is no evidence of none."""
    if r["direction"] == "rises" and "rises_holm" in r and not bool(r["rises_holm"]):
        return "<br><small>not after Holm</small>"
    if r["direction"] == "no change" and not _missing(r.get("ratio_lo")) and r["ratio_lo"] < 0.5 and r["ratio_hi"] > 2:
        return "<br><small>too few to tell</small>"
    return ""


def tools_told_apart(rows: pd.DataFrame) -> str:
    """Return, as plain text, the tools whose simulated outputs a realism judge told from
    real ones (rows of :func:`depsim.realism.told_apart`), e.g. "simulated web_search outputs
    were judged real in 10 of 36 pairs (27.8% [15.3–43.7]; 50% = indistinguishable)"."""
    parts = [f"{r['tool']} in {int(r['k']):,} of {int(r['n']):,} pairs ({number(100 * r['win_rate'], 1)}% "
             f"{interval(100 * r['lo'], 100 * r['hi'], 1)})" for _, r in rows.iterrows()]
    return "simulated outputs were judged real for " + "; ".join(parts) + " (50% = indistinguishable)"


def _tool_mark(r) -> str:
    """The decision table's marker of a forecast resting on tool outputs a judge told apart."""
    if _missing(r.get("tool_caveat")):
        return ""
    return f'<br><small class="depsim-untrusted" title="{escape(str(r["tool_caveat"]))}">⚠ tool realism</small>'


def _uncertainty_mark(r) -> str:
    """The decision table's lines under a forecast: its corrected rate, its failed grades
    above the warning threshold, and its cluster-robust interval when the design effect
    reaches :data:`DEFF_SUMMARY`."""
    out = ""
    if not _missing(r.get("rg_lo")):
        out += f"<br><small>corrected {escape(_corrected(r, short=True))}</small>"
    if not _missing(r.get("failed_warning")) and bool(r.get("failed_warning")):
        out += f'<br><small class="depsim-untrusted">⚠ {r["failed_share"]:.1%} of grades failed</small>'
    if not _missing(r.get("deff")) and r["deff"] >= DEFF_SUMMARY:
        out += f"<br><small>by conversation {interval100k(r['conv_lo'], r['conv_hi'])}</small>"
    return out


def method_record(record: pd.DataFrame | None, level: float = 0.95) -> HTML:
    """Return one line per forecasting method: how far it can be trusted, from its record on
    earlier releases (median multiplicative error, coverage of its ``level`` predictive
    interval over the ``coverage_rows`` forward-chained forecasts, direction); a method with
    no earlier release (``releases`` = 0) is listed as having no track record."""
    if record is None or record.empty:
        return text("No history of earlier releases (params `history:`): no method has a track record yet.")
    lines = []
    for _, r in record.iterrows():
        if not r.get("releases"):
            # a method new to this release: its intervals come from the error model's prior alone
            lines.append(f"<li><strong>{escape(r['method'])}</strong>: no track record (not in the history of "
                         f"earlier releases): its predictive intervals come from the error model's prior alone and "
                         f"span almost every count, so whatever share of realised rates they cover says nothing "
                         f"about it.</li>")
            continue
        rows = "" if _missing(r.get("coverage_rows")) else f" {int(r['coverage_rows']):,}"
        cov = ("too few releases to check its intervals" if _missing(r.get("coverage")) else
               f"{r['coverage']:.0%} of the{rows} realised counts checked fell inside its {level:.0%} predictive "
               f"interval (widened by its past errors; each release predicted from the ones before it)")
        direction = ("it predicts no change" if str(r["direction"]).startswith("n/a")
                     else f"direction right on {escape(str(r['direction']))} large shifts")
        worst = "" if _missing(r.get("sme_max_all")) else (
            f"; over all {int(r['categories_all']):,} of its forecasts with an event, worst "
            f"{number(r['sme_max_all'], 1)}× ({escape(str(r['worst_all']))})")
        lines.append(f"<li><strong>{escape(r['method'])}</strong>: on {int(r['releases'])} earlier releases "
                     f"({int(r['categories']):,} category forecasts that every method made) it was off by a median "
                     f"factor of {number(r['sme_median'], 2)} (worst {number(r['sme_max'], 1)}){worst}; {cov}; "
                     f"{direction}.</li>")
    return HTML("<ul>" + "".join(lines) + "</ul>")


POOL_KINDS = {"real": "real traffic", "public": "public data", "simulated": "simulated", "stand-in": "stand-in"}


def pools(table_: pd.DataFrame) -> HTML:
    """Return the pools table: what each pool and target really is (real traffic, public
    data, simulated, or a stand-in)."""
    return table(table_)


def realised(out: dict) -> HTML:
    """Return the realised results (realised rate against the forecast, per category) when
    the release has a realised pool that is not a stand-in; otherwise say why there are none."""
    if not out.get("realised_ok"):
        return text(out.get("realised_why") or "Not released yet: nothing realised to compare.")
    sc, level = out["forecasts"], out.get("level", 0.95)
    sc = sc[sc["method"] == "deployment_sim"].set_index("category")
    inside_name = " ".join(w for w in ("realised count inside the", _predictive_level(sc), "predictive interval") if w)
    says_nothing = score.untracked(sc)
    order = list(out["decision"]["category"]) if out.get("decision") is not None and len(out["decision"]) else list(sc.index)
    rows = []
    for cat in [c for c in order if c in sc.index]:
        r = sc.loc[cat]
        kr, nr = int(r["k_real"]), int(r["n_real"])
        lo, hi = _exact_interval(kr, nr, level)
        # calibration asks whether the realised COUNT falls in the forecast's predictive
        # interval for it (forecast noise, the method's past error, the realised binomial
        # noise); a point estimate inside a confidence interval is not calibration
        inside = DASH
        if nr and "pred_k_lo" in sc and np.isfinite(r.get("pred_k_lo", np.nan)) and r.get("pred_n"):
            scale = nr / float(r["pred_n"])
            inside = "yes" if r["pred_k_lo"] * scale <= kr <= r["pred_k_hi"] * scale else "no"
            if says_nothing[cat]:
                inside += " (says nothing: no track record, or the interval spans almost every count)"
        real = (f"{k_of_n(kr, nr)} ({rate_or_bound100k(kr, nr, level)})" if not kr else
                f"{rate100k(kr / nr)} {interval100k(lo, hi)} ({k_of_n(kr, nr)})")
        rows.append({"category": category_title(cat, out.get("taxonomy")),
                     "forecast per 100k": _count_rate(r, "k", "n", level),
                     f"realised per 100k [{level:.0%}]": real,
                     inside_name: inside})
    return HTML(text(out.get("realised_why") or "").data + table(pd.DataFrame(rows)).data)


GLOSSARY = [
    ("per 100k", "events per 100,000 responses; every rate on these pages is in this unit unless a table says percent."),
    ("k of n", "k responses flagged by the grader out of n graded."),
    ("exact interval", "Clopper–Pearson interval of a binomial rate: it never claims more certainty than the counts give."),
    ("Jeffreys", "the Jeffreys interval (the realism judge's win rates) and the smoothed estimate (k + ½)/(n + 1), "
                 "used inside computations such as SME; a rate is shown as k of n with its exact interval."),
    ("ratio X / Y", "forecast rate of the candidate over the previous model's production rate, (k/n)/(k₀/n₀): "
                    "the ratio of the k-of-n rates beside it; \"new\" when the previous count is 0, a dash when "
                    "both are. The interval is exact (conditional binomial, Clopper–Pearson) and is [0–∞] when both "
                    "counts are zero."),
    ("rises / falls / no change", "the ratio's interval lies wholly above 1 / below 1 / includes 1."),
    ("too few to tell", "under \"no change\": the ratio's interval holds both 0.5 and 2, so the sample cannot tell "
                        "a halving from a doubling; it is no evidence that nothing changed."),
    ("no previous rate", "no usable rate of the previous model to compare with (no prod_prev target, or every "
                         "previous grade failed): the change was not checked."),
    ("gate", "a release limit from the params file: a maximum rate, or a maximum ratio to the previous rate. "
             "\"breaches\": even the exact interval's low end is over it; \"may breach\": its upper end "
             "is. The check counts failed grades at either extreme and, where sampled turns share "
             "conversations, shrinks the counts by the design effect; it does not count the method's past "
             "errors (see each method's track record)."),
    ("NLL", "negative log-likelihood (nats) of the realised count under a forecast; lower is better."),
    ("SME", "symmetric multiplicative error, max(a/b, b/a): the factor by which forecast and realised rates differ, "
            "both Jeffreys-smoothed ((k + ½)/(n + 1)) so that zero counts stay finite; it can therefore differ a "
            "little from the ratio of the k-of-n rates shown beside it."),
    ("coverage", "share of realised counts inside the method's predictive interval at the report's level "
                 "(its forecast, its past errors and the realised sample's noise): a calibrated method scores that level."),
    ("stand-in", "a pool that takes the place of data that does not exist (e.g. the previous pool reused as "
                 "post-release traffic); it is never scored as realised."),
    ("grader id", "hash of a grader's whole spec; rates from different grader ids are never compared."),
]


def glossary() -> HTML:
    """Return the glossary of the report's terms."""
    return HTML("<dl>" + "".join(f"<dt><strong>{escape(t)}</strong></dt><dd>{escape(d)}</dd>"
                                 for t, d in GLOSSARY) + "</dl>")


def provenance(prov: dict, stale: pd.DataFrame | None = None) -> HTML:
    """Return the provenance block (depsim version, git commit, params hash, model and
    grader ids, date; the renderer is filled in when the page is rendered) and each
    table's stamp, with stale tables marked."""
    items = "".join(f"<tr><th>{escape(readable(k))}</th><td>{escape(cell(v))}</td></tr>" for k, v in prov.items())
    items += '<tr><th>renderer</th><td class="depsim-renderer">(set when rendered)</td></tr>'
    out = f'<table class="depsim-table depsim-provenance">{items}</table>'
    if stale is not None and len(stale):
        out += table(stale).data
    return HTML(STYLE + out)


def audit_links(clusters_: pd.DataFrame) -> HTML:
    """Return the audit's clusters as links to their examples, unmatched (novel) first."""
    if clusters_ is None or clusters_.empty:
        return text("The audit found no clusters.")
    c = clusters_.sort_values(["novel", "size"], ascending=[False, False])
    items = "".join(f'<li><a href="{EXAMPLES_PAGE}#{anchor("cluster", r["cluster"])}">{escape(str(r["label"]))}</a> '
                    f'({int(r["size"]):,} findings; {"no matching category" if r["novel"] else "matches " + escape(category_title(r["category"]))})</li>'
                    for _, r in c.iterrows())
    return HTML(f"<ul>{items}</ul>")


# ---------------------------------------------------------------------------- the examples page

FILTER = """<p><label>Filter examples: <input id="depsim-filter" type="search" size="40"
 placeholder="any text: a category, a target, a word in a transcript"></label> <span id="depsim-filter-count"></span></p>
<script>
(function () {
  var box = document.getElementById("depsim-filter");
  if (!box) { return; }
  box.addEventListener("input", function () {
    var q = box.value.toLowerCase(), shown = 0;
    var items = document.querySelectorAll(".depsim-example");
    for (var i = 0; i < items.length; i++) {
      var hit = !q || items[i].textContent.toLowerCase().indexOf(q) >= 0;
      items[i].style.display = hit ? "" : "none";
      if (hit) { shown++; }
    }
    document.getElementById("depsim-filter-count").textContent = q ? shown + " shown" : "";
  });
})();
</script>"""


def _message_html(m: dict, max_chars: int) -> str:
    role = str(m.get("role", "?"))
    parts = []
    content = m.get("content")
    if isinstance(content, list):  # content parts: keep their text
        content = " ".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    if content:
        s = str(content)
        more = f" … ({len(s) - max_chars:,} more characters)" if len(s) > max_chars else ""
        parts.append(escape(s[:max_chars]) + more)
    for call in m.get("tool_calls") or []:
        fn = call.get("function", {}) if isinstance(call, dict) else {}
        parts.append(f"<em>calls tool</em> <code>{escape(str(fn.get('name', '?')))}</code>("
                     f"<code>{escape(str(fn.get('arguments', ''))[:max_chars])}</code>)")
    if role == "tool" and m.get("tool_call_id"):
        role = f"tool output ({m['tool_call_id']})"
    reasoning = m.get("reasoning_content")
    if reasoning:
        parts.append(f"<em>reasoning:</em> {escape(str(reasoning)[:max_chars])}")
    return f'<div class="msg"><span class="role">{escape(role)}:</span> {"<br>".join(parts) or DASH}</div>'


def transcript_block(ex: dict, max_chars: int = 2000) -> str:
    """Return one flagged example as escaped HTML: every message of the prefix (all roles,
    tool calls and tool outputs), the response, and the grade (label, confidence, rationale,
    grader id)."""
    prefix = "".join(_message_html(m, max_chars) for m in ex["prefix"])
    response = "".join(_message_html(m, max_chars) for m in ex["response"]) or '<div class="msg">(no response)</div>'
    conf = DASH if _missing(ex.get("confidence")) else f"{float(ex['confidence']):.2f}"
    label = {True: "flagged", False: "not flagged"}.get(ex.get("label"), DASH)
    grade_ = (f'<div class="grade"><strong>grader</strong>: {escape(label)} · confidence {conf}'
              f'{"" if conf != DASH else " (this grader states none)"} · grader id <code>{escape(str(ex["grader_id"]))}</code>'
              f'<br><strong>rationale</strong>: <span class="depsim-rationale">{escape(str(ex.get("rationale") or DASH))}</span></div>')
    note = f'<div class="grade"><strong>auditor</strong>: {escape(ex["finding"])}</div>' if ex.get("finding") else ""
    return (f'<div class="depsim-example"><small>{escape(ex["category_title"])} · target '
            f'{escape(ex["target"])} · item {escape(str(ex["item_id"]))}</small>'
            f'<details open><summary>prefix ({len(ex["prefix"])} messages)</summary>{prefix}</details>'
            f'<div><strong>response</strong>{response}</div>{grade_}{note}</div>')


def examples(ex: dict) -> HTML:
    """Return the examples page body: a filter box, then per category and per audit cluster
    (each with its own anchor) a bounded sample of flagged transcripts with their grades."""
    toc = " · ".join(f'<a href="#{anchor("cat", c["category"])}">{escape(c["title"])}</a>' for c in ex["categories"])
    toc += " · " + " · ".join(f'<a href="#{anchor("cluster", c["cluster"])}">cluster {int(c["cluster"])}</a>'
                              for c in ex["clusters"])
    parts = [STYLE, f"<p><small>{toc}</small></p>", FILTER]
    for cat in ex["categories"]:
        shown = (f'Showing up to {ex["per_target"]} flagged per target.' if cat["flagged"] else
                 f'No response was flagged in any target; showing up to {ex["per_target"]} graded responses of sim, '
                 'so the grader can be checked.')
        head = (f'<section id="{anchor("cat", cat["category"])}" data-flagged="{int(cat["flagged"])}">'
                f'<h3>{escape(cat["title"])} <small>({escape(cat["category"])})</small></h3><p>'
                + "; ".join(f"{escape(t)}: {k_of_n(k, n)} flagged" for t, k, n in cat["counts"])
                + f'. {shown}</p>')
        body = "".join(transcript_block(e) for e in cat["examples"]) or "<p>No graded response to show.</p>"
        parts.append(head + body + "</section>")
    parts.append("<h2>Audit clusters</h2>")
    for cl in ex["clusters"]:
        head = (f'<section id="{anchor("cluster", cl["cluster"])}"><h3>Cluster {int(cl["cluster"])}: '
                f'{escape(str(cl["label"]))}</h3><p>{int(cl["size"]):,} findings; '
                f'{"no matching category (novel)" if cl["novel"] else "matches " + escape(category_title(cl["category"]))}.'
                f' Showing up to {ex["per_cluster"]}.</p>')
        body = "".join(transcript_block(e) for e in cl["examples"]) or "<p>No transcript found for this cluster.</p>"
        parts.append(head + body + "</section>")
    return HTML("".join(parts))


def pit_chart(pit: pd.DataFrame | None, empty: str = "") -> alt.Chart | HTML:
    """Return the PIT histogram per method (10 bins of the randomised probability integral
    transform of each realised count under its forecast's predictive distribution): flat
    when the predictive intervals are calibrated, U-shaped when too narrow, humped when too
    wide."""
    if pit is None or len(pit) == 0:
        return text(empty)
    return alt.Chart(pit).mark_bar().encode(
        x=alt.X("pit:Q", bin=alt.Bin(step=0.1, extent=[0, 1]), title="PIT of the realised count"),
        y=alt.Y("count():Q", title="predictions"),
        column=alt.Column("method:N", title=None)).properties(width=180, height=140)
