"""Sample conversation prefixes from a previous model's traffic (the "deployment" to simulate).

A *prefix* is a logged conversation cut right after one of its user messages: the simulator
regenerates the assistant turn that follows it with the candidate model. The unit of sampling
is the **user turn**, not the conversation: every eligible user turn is equally likely, so a
conversation with five eligible user turns is five times as likely to contribute as one with a
single turn (this matches per-turn misbehaviour rates in production).

Public API
----------
- :class:`EligibilityRules` - which user turns may be sampled.
- :func:`sample_prefixes` - ``n`` eligible user turns, uniformly without replacement (or
  stratified), as prefixes ready for regeneration, in a pandas DataFrame.
- :func:`user_turns` - every eligible user turn of a log (one row each), as an Arrow table.
- :func:`turn_hash`, :func:`prefix_id` - the Python reference of the two hashes.

Reproducibility. The sample is "order the eligible user turns by a seeded key and take the
first ``n``". A turn is keyed by (conversation_id, user ordinal) - the k-th user message of the
conversation, which within a log is the same thing as (conversation_id, turn_index). With
``p = "{seed}\x1f{conversation_id}\x1f"``, its key is 36 hex digits (:func:`turn_hash`): a 4-digit
head, digits ``4j..4j+3`` of ``md5(p + "#{b}")`` for ``k - 1 = 8b + j``, then ``md5(p + "{k}")``.
Only md5 and string operations are used (not DuckDB's ``hash()``, whose values may change
between DuckDB versions), so the sample does not depend on DuckDB's version, file order, thread
count or how the log is split into files. With md5 taken as a random function, the keys of all
turns are independent and uniform, so every eligible turn is equally likely to be sampled. Rows
come back in key order, so the first ``k`` rows of a sample of size ``n`` are the sample of size
``k``. (Before the heads were introduced a key was the bare ``md5(p + "{k}")``: samples drawn
with the same seed differ from those of earlier versions.)

How it scales. All JSON work runs in DuckDB and streams over the Parquet files; Python only holds
the sampled prefixes (and the few let through beyond them). Keying turns by ordinal lets the keys be tested before any JSON is parsed
(the number of user messages is bounded by counting ``"user"`` tokens in the raw text): a
conversation is parsed only if one of its turns has a key below a threshold ``tau``, and the
heads make that test cost one md5 per conversation (the per-turn md5 is computed for the few
turns whose head is at most ``tau``'s). The prefix cut and the eligibility tests run for those
few turns only, and the prefix texts are built for the turns that are kept. ``tau`` is either
estimated from a small pilot read (large Parquet logs: one pass over the data), or exact (one
pass that tests every turn, then the sampling pass: small or in-memory inputs, stratified
samples, and the fallback when the estimate was too tight). Either way the result is the same.
A conversation with candidate turns is parsed once however many they are, and each prefix is
cut from the conversation's JSON text, so a long conversation sampled many times costs its
prefixes' text, not a copy of the conversation per candidate. Memory: DuckDB's limit is
``memory_limit`` (default DuckDB's, 80 % of the machine's memory), with spilling to a private
folder under ``spill_dir``; results are fetched in batches.
"""
from __future__ import annotations

import glob as _glob
import hashlib
import logging
import math
import os
import shutil
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from depsim.params import EligibilityRules

from depsim.readers import LANGUAGE_CODES

__all__ = [
    "EligibilityRules",
    "SamplingWarning",
    "METADATA_COLUMNS",
    "REQUIRED_COLUMNS",
    "OUTPUT_COLUMNS",
    "prefix_id",
    "sample_prefixes",
    "turn_hash",
    "user_turns",
]

log = logging.getLogger(__name__)

#: Columns every conversation table must have.
REQUIRED_COLUMNS: tuple[str, ...] = ("conversation_id", "messages", "source")
#: Metadata columns carried into the output; missing ones come back as nulls (unless a rule
#: needs them, in which case they are required).
METADATA_COLUMNS: tuple[str, ...] = ("model", "language", "surface", "created_at")
#: Leading output columns of :func:`sample_prefixes` (metadata, stratum and extra columns,
#: ``user_ordinal`` and ``chars`` follow).
OUTPUT_COLUMNS: tuple[str, ...] = ("prefix_id", "conversation_id", "turn_index", "messages",
                                   "next_message", "source", "weight")
#: Content-part types that count as text (Chat Completions and Responses API spellings).
TEXT_PART_TYPES: tuple[str, ...] = ("text", "input_text")

_SEP = "\x1f"  # unit separator between hashed fields
_BLOCK = 8  # user ordinals sharing one md5 for the heads of their keys
_HEAD = 32 // _BLOCK  # hex digits of a key's head
_KEY_DIGITS = _HEAD + 32  # hex digits of a key (head + per-turn md5)
_TAU_ALL = "f" * _KEY_DIGITS  # a threshold every turn hash is <= to
_PILOT_MIN_ROWS = 20_000  # below this a log is small: take the exact route
_PILOT_ROW_GROUPS = 8  # pilot: heads of this many row groups, spread over the log
_PILOT_ROWS = 4_000  # pilot: conversations read in all
_FAST_MAX_SHARE = 0.25  # use the one-pass route only if the sample is <= 25 % of the turns
_BIG_LIMIT = 2**63 - 1  # a LIMIT that limits nothing (an optimizer fence)
_STREAM_ROWS = 2048  # rows per Arrow batch fetched from DuckDB
_CAP_FACTOR, _CAP_SLACK = 1.5, 1000  # a sampling pass returns at most factor * wanted + slack rows


class SamplingWarning(UserWarning):
    """The sample is smaller than asked for (too few eligible user turns)."""


# --- hashes (also the reference implementation the SQL must agree with) ---------------------

def turn_hash(seed: int, conversation_id: str, user_ordinal: int) -> str:
    """The sampling key of one user turn - the ``user_ordinal``-th user message (1-based) of the
    conversation - as 36 hex digits; lower is sampled first.

    With ``k = user_ordinal``, ``p = f"{seed}\\x1f{conversation_id}\\x1f"``, ``b = (k - 1) // 8``
    and ``j = (k - 1) % 8``, the key is ``md5(p + f"#{b}")[4 * j : 4 * j + 4] + md5(p + str(k))``:
    a 16-bit head shared out of one md5 per block of eight ordinals, then a per-turn md5. Under
    the usual model of md5 as a random function every turn's key is an independent uniform
    144-bit string. The head lets the sampling pass discard almost every turn with one md5 per
    conversation (a turn can be sampled only if its head is <= the threshold's head); the
    per-turn md5 is computed for the few that pass."""
    prefix = f"{seed}{_SEP}{conversation_id}{_SEP}"
    block, slot = divmod(user_ordinal - 1, _BLOCK)
    head = hashlib.md5(f"{prefix}#{block}".encode("utf-8")).hexdigest()[_HEAD * slot:_HEAD * (slot + 1)]
    return head + hashlib.md5(f"{prefix}{user_ordinal}".encode("utf-8")).hexdigest()


def prefix_id(conversation_id: str, turn_index: int, source: str | None) -> str:
    """Stable 16-hex-digit id of a prefix (independent of the seed)."""
    key = f"{conversation_id}{_SEP}{turn_index}{_SEP}{source if isinstance(source, str) else ''}"
    return hashlib.md5(key.encode("utf-8")).hexdigest()[:16]


# --- input resolution -------------------------------------------------------------------------

@dataclass
class _Source:
    """A resolved input: Parquet files or one in-memory Arrow table."""

    files: list[str] = field(default_factory=list)
    table: pa.Table | None = None
    columns: set[str] = field(default_factory=set)  # union over files
    row_groups: list[list[int]] = field(default_factory=list)  # rows per row group, per file

    @property
    def total_rows(self) -> int:
        if self.table is not None:
            return self.table.num_rows
        return sum(sum(groups) for groups in self.row_groups)

    def sql(self) -> str:
        if self.table is not None:
            return "__depsim_src"
        paths = ", ".join(_lit(f) for f in self.files)
        return f"read_parquet([{paths}], union_by_name = true)"


def _is_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _expand(path: str | os.PathLike) -> list[str]:
    s = os.path.expanduser(os.fspath(path))
    if _is_glob(s):
        found = sorted(p for p in _glob.glob(s, recursive=True) if os.path.isfile(p))
        if not found:
            raise FileNotFoundError(f"no Parquet files match {s!r}")
        return found
    if os.path.isdir(s):
        found = sorted(_glob.glob(os.path.join(s, "**", "*.parquet"), recursive=True))
        if not found:
            raise FileNotFoundError(f"no *.parquet files under directory {s!r}")
        return found
    if not os.path.exists(s):
        raise FileNotFoundError(f"Parquet file not found: {s!r}")
    return [s]


def _resolve(source: Any, needed: Sequence[str]) -> _Source:
    """Resolve ``source`` and check that every column in ``needed`` exists.

    Raises FileNotFoundError (naming the path) and ValueError (naming file and column)."""
    needed = list(dict.fromkeys(needed))
    if isinstance(source, pd.DataFrame):
        source = pa.Table.from_pandas(source, preserve_index=False)
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    if isinstance(source, pa.Table):
        missing = [c for c in needed if c not in source.column_names]
        if missing:
            raise ValueError(f"input table is missing required column(s) {missing} "
                             f"(has {source.column_names})")
        return _Source(table=source, columns=set(source.column_names))
    if isinstance(source, (str, os.PathLike)):
        items = [source]
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        items = list(source)
        if not items:
            raise ValueError("empty list of Parquet paths")
    else:
        raise TypeError(f"source must be a Parquet path, glob, list of paths, or a pandas/pyarrow "
                        f"table, not {type(source).__name__}")
    files: list[str] = []
    for item in items:
        files += _expand(item)
    files = list(dict.fromkeys(files))
    src = _Source(files=files)
    for f in files:
        try:
            meta = pq.read_metadata(f)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ValueError(f"cannot read Parquet metadata of {f!r}: {exc}") from exc
        names = set(meta.schema.to_arrow_schema().names)
        for col in needed:
            if col not in names:
                raise ValueError(f"Parquet file {f!r} is missing required column {col!r}")
        src.columns |= names
        src.row_groups.append([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    return src


# --- SQL helpers ------------------------------------------------------------------------------

def _lit(value: Any) -> str:
    """A SQL literal for a str/int/float/datetime."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ {_lit(_utc(value).isoformat())}"
    return "'" + str(value).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _duckdb_version() -> tuple[int, int]:
    major, minor = duckdb.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


_PY_LAMBDA = _duckdb_version() >= (1, 3)


def _lam(params: str, body: str) -> str:
    """A DuckDB lambda; ``lambda x: ...`` from 1.3 on (2.x rejects ``x -> ...``)."""
    if _PY_LAMBDA:
        return f"lambda {params}: {body}"
    return f"({params}) -> {body}" if "," in params else f"{params} -> {body}"


def _head_sql(pfx: str, k: str, block0: str | None = None) -> str:
    """SQL: the head of the key of user ordinal ``k`` (see :func:`turn_hash`); ``pfx`` is the
    key prefix ``seed || chr(31) || conversation_id || chr(31)``, ``block0`` (optional) an
    expression already holding ``md5(pfx || '#0')``, the block of ordinals 1-8."""
    block = f"md5({pfx} || '#' || CAST(({k} - 1) // {_BLOCK} AS VARCHAR))"
    if block0 is not None:
        block = f"CASE WHEN {k} <= {_BLOCK} THEN {block0} ELSE {block} END"
    return f"substr({block}, {_HEAD} * (({k} - 1) % {_BLOCK}) + 1, {_HEAD})"


def _pfx_sql(seed: int, cid: str) -> str:
    """SQL: the key prefix ``seed || chr(31) || conversation_id || chr(31)``."""
    return f"({_lit(str(seed))} || chr(31) || CAST({cid} AS VARCHAR) || chr(31))"


def _key_sql(pfx: str, k: str, block0: str | None = None) -> str:
    """SQL twin of :func:`turn_hash` for user ordinal ``k`` (``pfx``, ``block0``: see
    :func:`_head_sql`)."""
    return f"({_head_sql(pfx, k, block0)} || md5({pfx} || CAST({k} AS VARCHAR)))"


def _stats_sql(ctype: str, val: str, att: str) -> tuple[str, str]:
    """(chars, nontext) SQL for one user message, given its content's JSON type ``ctype``
    ('VARCHAR', 'ARRAY', 'NULL', ... or SQL NULL when absent), its content ``val`` (the text for
    a string, the JSON text otherwise) and its ``attachments`` as text. Both routes (exact and
    one-pass) feed this same expression, so they agree on what is eligible."""
    text_types = ", ".join(_lit(t) for t in TEXT_PART_TYPES)
    parts = f"from_json({val}, '[\"JSON\"]')"
    is_text_obj = f"(json_type(p) = 'OBJECT' AND json_extract_string(p, '$.type') IN ({text_types}))"
    part_len = (f"CASE WHEN json_type(p) = 'VARCHAR' THEN length(json_extract_string(p, '$')) "
                f"WHEN {is_text_obj} THEN coalesce(length(json_extract_string(p, '$.text')), 0) "
                f"ELSE 0 END")
    part_nontext = f"NOT (json_type(p) = 'VARCHAR' OR {is_text_obj})"
    chars = (f"CASE {ctype} WHEN 'VARCHAR' THEN length({val}) "
             f"WHEN 'ARRAY' THEN coalesce(list_sum(list_transform({parts}, {_lam('p', part_len)})), 0) "
             f"ELSE 0 END")
    # CASE, not AND/OR: DuckDB short-circuits only CASE, and from_json must not see plain text
    # empty attachments: an explicit OR chain, as DuckDB may turn a NOT IN list into a join
    no_att = " OR ".join(f"CAST({att} AS VARCHAR) = {_lit(x)}"
                         for x in ("null", "[]", "{}", '""', "", "false"))
    any_nontext_part = f"list_bool_or(list_transform({parts}, {_lam('p', part_nontext)}))"
    nontext = (f"CASE WHEN {att} IS NOT NULL AND NOT ({no_att}) THEN true "
               f"WHEN {ctype} IS NULL OR {ctype} IN ('VARCHAR', 'NULL') THEN false "
               f"WHEN {ctype} = 'ARRAY' THEN coalesce({any_nontext_part}, false) "
               f"ELSE true END")
    return chars, f"({nontext})"


def _eligible_sql(rules: EligibilityRules, chars: str, nontext: str) -> str:
    cond = [f"{chars} >= {rules.min_chars}"]
    if rules.max_chars is not None:
        cond.append(f"{chars} <= {rules.max_chars}")
    if not rules.allow_multimodal:
        cond.append(f"NOT {nontext}")
    return " AND ".join(cond)


@dataclass
class _Plan:
    """What to select from each conversation row, and the conversation-level filter."""

    select: list[str]  # SQL select items (aliased) for the innermost scan
    names: list[str]  # their output names
    where: str


def _plan(src: _Source, rules: EligibilityRules, stratum_column: str | None,
          strata_keys: Sequence[str] | None, extra_columns: Sequence[str]) -> _Plan:
    select, names = [], []

    def add(expr: str, name: str) -> None:
        if name not in names:
            select.append(f"{expr} AS {_ident(name)}")
            names.append(name)

    add("conversation_id", "conversation_id")
    add("source", "source")
    for col in METADATA_COLUMNS:
        if col in src.columns:
            add(_ident(col), col)
        else:
            add("CAST(NULL AS TIMESTAMP)" if col == "created_at" else "CAST(NULL AS VARCHAR)", col)
    for col in ([stratum_column] if stratum_column else []) + list(extra_columns):
        add(_ident(col), col)
    if stratum_column is not None:
        add(f"CAST({_ident(stratum_column)} AS VARCHAR)", "__s")

    where = ["conversation_id IS NOT NULL", "messages IS NOT NULL"]
    if rules.languages is not None:
        where.append(_language_sql(rules.languages))
    if rules.surfaces is not None:
        where.append(f"surface IN ({', '.join(_lit(x) for x in rules.surfaces)})")
    if rules.start is not None:
        where.append(f"created_at >= {_lit(rules.start)}")
    if rules.end is not None:
        where.append(f"created_at < {_lit(rules.end)}")
    if stratum_column is not None and strata_keys is not None:
        where.append(f"CAST({_ident(stratum_column)} AS VARCHAR) IN "
                     f"({', '.join(_lit(k) for k in strata_keys)})")
    return _Plan(select, names, " AND ".join(where))


def language_spellings(languages: Sequence[str]) -> list[str]:
    """Every lower-case spelling that counts as one of ``languages``: the value itself, its ISO
    639-1 code for a name ("English" -> "en") and the names of a code ("en" -> "english"), so
    rules may use either whatever the log stores."""
    names: dict[str, list[str]] = {}
    for name, code in LANGUAGE_CODES.items():
        names.setdefault(code, []).append(name)
    out: list[str] = []
    for x in languages:
        x = str(x).strip().lower()
        code = LANGUAGE_CODES.get(x, x)
        for v in (x, code, *names.get(code, [])):
            if v not in out:
                out.append(v)
    return out


def _language_sql(languages: Sequence[str]) -> str:
    """SQL: the conversation's language is one of ``languages`` (any spelling; "en" also
    matches "en-US")."""
    vals = ", ".join(_lit(x) for x in language_spellings(languages))
    lang = "lower(trim(CAST(language AS VARCHAR)))"
    return f"({lang} IN ({vals}) OR split_part(replace({lang}, '_', '-'), '-', 1) IN ({vals}))"


def _turn_slice(rules: EligibilityRules, ui: str) -> str:
    """The elements of the user-turn list ``ui`` whose 1-based ordinal is within the rules."""
    hi = rules.max_turn if rules.max_turn is not None else 2_147_483_647
    return f"list_slice({ui}, {rules.min_turn}, {hi})"


_MSG_STRUCT = '[{"role": "VARCHAR", "content": "VARCHAR", "attachments": "VARCHAR"}]'


def _turns_sql(src_sql: str, plan: _Plan, rules: EligibilityRules, seed: int | None) -> str:
    """Every eligible user turn (one row each), tested for all turns (the exact route).

    Columns: plan.names..., turn_index, user_ordinal, chars[, __h].

    One parse per conversation: ``from_json`` into (role, content, attachments) as text. For a
    string content that gives the text itself; when the text could also be the rendering of a
    non-string (starts with '[' or '{', or reads as a number or boolean), the real JSON type
    is looked up in the raw message. A conversation with a message that is not an object with a
    role is malformed and contributes nothing. There is no WHERE on computed columns: DuckDB
    pushes such filters below the projections and evaluates the JSON functions twice, so the
    per-turn tests run inside list lambdas before the unnest."""
    cols = ", ".join(_ident(n) for n in plan.names)
    is_user = _lam("i", "__m[i + 1].role = 'user'")
    v = "__m[i + 1].content"
    ctype = (f"CASE WHEN {v} IS NULL THEN NULL "
             f"WHEN left({v}, 1) IN ('[', '{{') OR {v} IN ('true', 'false') "
             f"OR TRY_CAST({v} AS DOUBLE) IS NOT NULL "
             f"THEN json_type(messages, '$[' || i || '].content') ELSE 'VARCHAR' END")
    to_turn = _lam("i, k", "{'ti': i, 'ord': k, 'v': __m[i + 1].content, "
                           f"'a': __m[i + 1].attachments, 't': {ctype}}}")
    chars, nontext = _stats_sql("x.t", "x.v", "x.a")
    to_stats = _lam("x", f"{{'ti': x.ti, 'ord': x.ord, 'chars': {chars}, 'nontext': {nontext}}}")
    keep = _lam("x", _eligible_sql(rules, "x.chars", "x.nontext"))
    turns = (f"list_filter(list_transform("
             f"{_turn_slice(rules, f'list_transform(__ui, {to_turn})')}, {to_stats}), {keep})")
    h = key = ""
    if seed is not None:
        pfx = _pfx_sql(seed, "conversation_id")
        key = f", {pfx} AS __pfx, md5({pfx} || '#0') AS __b0"
        h = f", {_key_sql('__pfx', '__t.ord', '__b0')} AS __h"
    wellformed = _lam("x", "x.role IS NULL")
    return f"""
SELECT {cols}, CAST(__t.ti AS INTEGER) AS turn_index, CAST(__t.ord AS INTEGER) AS user_ordinal,
       CAST(__t.chars AS BIGINT) AS chars{h}
FROM (
  SELECT {cols}, unnest({turns}) AS __t{key}
  FROM (
    SELECT {cols}, messages, __m,
           CASE WHEN len(list_filter(__m, {wellformed})) = 0
                THEN list_filter(range(len(__m)), {is_user}) ELSE [] END AS __ui
    FROM (
      SELECT {', '.join(plan.select)}, messages, from_json(messages, '{_MSG_STRUCT}') AS __m
      FROM {src_sql} WHERE {plan.where}
    )
  )
)"""


def _role_sql(e: str) -> str:
    """The role of message ``e`` (JSON as re-serialised by DuckDB: compact, keys in their
    original order), read without a parse when "role" is the first key, as it usually is. Only
    'user' and 'assistant' are spelled out; another role string reads '?', a missing one NULL."""
    known = " ".join(f"""WHEN starts_with({e}, '{{"role":"{r}",') OR {e} = '{{"role":"{r}"}}' THEN '{r}'"""
                      for r in ("user", "assistant"))
    return (f"""CASE {known} WHEN starts_with({e}, '{{"role":"') THEN '?' """
            f"""ELSE json_extract_string({e}, '$.role') END""")


def _sample_sql(src_sql: str, plan: _Plan, rules: EligibilityRules, seed: int, tau: str,
                limit: int | None, alloc: Mapping[str, int] | None, cap: int | None = None) -> str:
    """The sampling pass: the eligible user turns with hash <= tau (tau: SQL expression, may
    use the stratum ``__s``), cut into prefixes. Rows come in no particular order.

    With ``cap``, the query returns every such turn, but at most ``cap`` rows: the caller
    orders them and takes the first ``limit`` (per stratum: ``alloc[s]``) itself, which costs
    far less than a top-N inside DuckDB that drags the prefix texts through a sort; a result of
    ``cap`` rows may be cut short (the caller then runs the query without ``cap``). Without
    ``cap``, DuckDB keeps only the first ``limit`` by hash (per stratum: the first ``alloc[s]``).

    The turn key (see :func:`turn_hash`) depends on (conversation_id, user ordinal) only, so the
    keys can be tested before any JSON is parsed: the number of user messages is bounded by the
    number of ``"user"`` tokens in the raw text (a JSON string cannot contain an unescaped quote,
    so every such token is a whole string outside the message texts), and an ordinal is a
    candidate only if the head of its key (one md5 per conversation covers ordinals 1-8) is <=
    the head of tau. Only conversations with a candidate are parsed; there the true user turns
    are found, the ordinals that do not exist are dropped and the full key is compared with tau.
    The eligibility test is never a WHERE right above the projections that compute it (DuckDB
    would push it below them and evaluate the JSON functions twice): it is folded into the
    ordering, or applied above a LIMIT, which filters are not pushed through. The prefix text is
    built last, for the rows that are kept."""
    cols = ", ".join(_ident(n) for n in plan.names)
    ub = """(len(string_split(messages, '"user"')) - 1)"""  # >= number of user messages
    hi = f"least({ub}, {rules.max_turn})" if rules.max_turn is not None else ub
    below = _lam("k", f"{_head_sql('__pfx', 'k', '__b0')} <= __tauh")
    # the same test for ordinals 1-8 without a list (most conversations have no more)
    quick = " OR ".join(f"(__hi >= {j} AND substr(__b0, {_HEAD * (j - 1) + 1}, {_HEAD}) <= __tauh)"
                        for j in range(max(1, rules.min_turn), _BLOCK + 1)) or "false"
    user_at = _lam("r, i", "CASE WHEN r = 'user' THEN i - 1 END")  # 0-based index of a user message
    not_null = _lam("x", "x IS NOT NULL")
    role_of = _lam("e", _role_sql("e"))
    chars, nontext = _stats_sql("__t", "__v", "__a")
    order = "__ok DESC, __h, conversation_id, user_ordinal, source, turn_index"
    if cap is not None:
        top = f"LIMIT {_BIG_LIMIT}"  # a fence: the WHERE __ok below is not pushed through it
        tail = f"LIMIT {cap}"
    elif alloc is not None:
        quota = "CASE __s " + " ".join(f"WHEN {_lit(k)} THEN {v}" for k, v in alloc.items()) + " ELSE 0 END"
        top, tail = f"QUALIFY row_number() OVER (PARTITION BY __s ORDER BY {order}) <= {quota}", ""
    else:
        top, tail = f"ORDER BY {order}" + (f" LIMIT {limit}" if limit is not None else ""), ""
    return f"""
WITH conv AS (
  SELECT *, CASE WHEN len(__c) > 0 THEN json_extract(messages, '$[*]') END AS __L
  FROM (SELECT {cols}, messages, __pfx, __tau,
               CASE WHEN __hi > {_BLOCK} OR {quick}
                    THEN list_filter(range({rules.min_turn}, __hi + 1), {below}) ELSE [] END AS __c
        FROM (SELECT *, substr(__tau, 1, {_HEAD}) AS __tauh, md5(__pfx || '#0') AS __b0
              FROM (SELECT {', '.join(plan.select)}, messages, {hi} AS __hi,
                           {_pfx_sql(seed, 'conversation_id')} AS __pfx, {tau} AS __tau
                    FROM {src_sql} WHERE {plan.where})))
), roles AS (
  -- parsed once per conversation with a candidate turn (not once per candidate: a long
  -- conversation may have hundreds), then each candidate refers to the same lists
  SELECT {cols}, __pfx, __tau, __c, __L, list_transform(__L, {role_of}) AS __roles,
         '[' || array_to_string(__L, ',') || ']' AS __J,
         list_transform(__L, {_lam('e', 'length(e)')}) AS __lens
  FROM conv
), cand AS (
  SELECT {cols}, __pfx, __tau, __L, __J, __lens, list_count(__roles) = len(__roles) AS __wf,
         list_filter(list_transform(__roles, {user_at}), {not_null}) AS __users,
         unnest(__c) AS user_ordinal
  FROM roles
), idx AS (
  SELECT {cols}, CAST(user_ordinal AS INTEGER) AS user_ordinal,
         {_key_sql('__pfx', 'user_ordinal')} AS __h, __tau, __L, __J, __lens, __wf,
         CAST(__users[user_ordinal] AS INTEGER) AS turn_index
  FROM cand
), el AS (
  SELECT *, json_type(__L[turn_index + 1], '$.content') AS __t,
         json_extract_string(__L[turn_index + 1], '$.content') AS __v,
         json_extract(__L[turn_index + 1], '$.attachments') AS __a
  FROM idx
), st AS (
  SELECT * EXCLUDE (__t, __v, __a), CAST({chars} AS BIGINT) AS chars, {nontext} AS __nontext FROM el
), ok AS (
  SELECT * EXCLUDE (__nontext, __wf, __tau),
         coalesce(__h <= __tau AND __wf AND turn_index IS NOT NULL
                  AND {_eligible_sql(rules, 'chars', '__nontext')}, false) AS __ok
  FROM st
), top AS (
  SELECT {cols}, turn_index, user_ordinal, chars, __h, __ok, __L, __J, __lens FROM ok
  {top}
)
SELECT {cols}, turn_index, user_ordinal, chars, __h,
       -- the prefix is a cut of the conversation's JSON text (its messages joined once), not a
       -- list of messages per sampled turn: a long conversation sampled many times stays small
       left(__J, CAST(list_sum(__lens[1:turn_index + 1]) AS BIGINT) + turn_index + 1) || ']' AS __prefix,
       CASE WHEN {_role_sql('__L[turn_index + 2]')} = 'assistant'
            THEN CAST(__L[turn_index + 2] AS VARCHAR) END AS __next,
       md5(concat_ws(chr(31), CAST(conversation_id AS VARCHAR), CAST(turn_index AS VARCHAR),
                     coalesce(CAST(source AS VARCHAR), '')))[1:16] AS prefix_id
FROM top WHERE __ok
{tail}"""


# --- DuckDB session ---------------------------------------------------------------------------

class _Session:
    """A private in-memory DuckDB connection with bounded threads/memory and its own spill dir."""

    def __init__(self, src: _Source, threads: int | None, memory_limit: str | None, spill_dir: str | None = None):
        if spill_dir is not None:
            os.makedirs(spill_dir, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix="depsim-duckdb-", dir=spill_dir)
        threads = self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        config = {"threads": threads, "preserve_insertion_order": False, "temp_directory": self.tmp}
        if memory_limit:  # else DuckDB's default: 80 % of the machine's memory
            config["memory_limit"] = memory_limit
        try:
            self.con = duckdb.connect(config=config)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.con.execute("SET enable_progress_bar = false")  # it would print to stdout
        try:
            self.con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error:  # ICU not available: naive timestamps are compared as-is
            pass
        if src.table is not None:
            self.con.register("__depsim_src", src.table)

    def set_string_views(self, on: bool) -> bool:
        """Have DuckDB export strings to Arrow as string views (or not again); False where this
        DuckDB cannot (before 1.1)."""
        try:
            if on:
                self.con.execute("SET produce_arrow_string_view = true")
                self.con.execute("SET arrow_output_version = '1.4'")
            else:
                self.con.execute("RESET produce_arrow_string_view")
                self.con.execute("RESET arrow_output_version")
        except duckdb.Error:
            if on:
                self.set_string_views(False)
            return False
        return True

    def __enter__(self) -> "_Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.con.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- public functions -------------------------------------------------------------------------

def user_turns(source: Any, rules: EligibilityRules | None = None, *,
               extra_columns: Sequence[str] = (), seed: int | None = None,
               threads: int | None = None, memory_limit: str | None = None,
               spill_dir: str | None = None) -> pa.Table:
    """Every eligible user turn of ``source`` (same inputs as :func:`sample_prefixes`).

    One row per turn: ``conversation_id, source, model, language, surface, created_at``
    (+ ``extra_columns``), ``turn_index`` (0-based index of the user message in ``messages``),
    ``user_ordinal`` (1-based among the user messages), ``chars``; with ``seed``, also
    ``turn_hash`` (the sampling key). Rows come in no particular order. The expansion runs in
    DuckDB (one JSON parse per conversation, every turn tested: several times slower than the
    one-pass sampling route); only the result, a few small columns per turn, is materialised.
    """
    rules = _rules(rules)
    seed = None if seed is None else _as_int(seed, "seed")
    extra_columns = [c for c in extra_columns if c not in (*REQUIRED_COLUMNS, *METADATA_COLUMNS)]
    src = _resolve(source, [*REQUIRED_COLUMNS, *rules.needed_columns(), *extra_columns])
    plan = _plan(src, rules, None, None, extra_columns)
    sql = _turns_sql(src.sql(), plan, rules, seed)
    with _Session(src, threads, memory_limit, spill_dir) as s:
        table = _arrow(s, sql)
    if seed is not None:
        table = table.rename_columns([("turn_hash" if n == "__h" else n) for n in table.column_names])
    return table


def explain_ineligible(source: Any, rules: EligibilityRules | None = None, *, threads: int | None = None,
                       memory_limit: str | None = None, spill_dir: str | None = None) -> str:
    """Why ``source`` has no eligible user turn under ``rules``: one line with the counts by
    filter and the likely cause (e.g. ``language is null in all 2,853 conversations``). Returns
    an empty string when some turn is eligible. Costs one pass over the data (two when the
    conversation filters leave something)."""
    rules = _rules(rules)
    src = _resolve(source, [*REQUIRED_COLUMNS, *rules.needed_columns()])
    plan = _plan(src, rules, None, None, ())
    parts = ["count(*)", f"count(*) FILTER (WHERE {plan.where})"]
    checks: list[tuple[str, str]] = []
    if rules.languages is not None:
        checks.append(("languages", _language_sql(rules.languages)))
        parts += ["count(language)", f"count(*) FILTER (WHERE {_language_sql(rules.languages)})"]
    if rules.surfaces is not None:
        cond = f"surface IN ({', '.join(_lit(x) for x in rules.surfaces)})"
        checks.append(("surfaces", cond))
        parts += ["count(surface)", f"count(*) FILTER (WHERE {cond})"]
    if rules.start is not None or rules.end is not None:
        cond = " AND ".join(([f"created_at >= {_lit(rules.start)}"] if rules.start is not None else [])
                            + ([f"created_at < {_lit(rules.end)}"] if rules.end is not None else []))
        checks.append(("dates", cond))
        parts += ["count(created_at)", f"count(*) FILTER (WHERE {cond})"]
    with _Session(src, threads, memory_limit, spill_dir) as s:
        row = s.con.execute(f"SELECT {', '.join(parts)} FROM {src.sql()}").fetchall()[0]
        total, passing = row[0], row[1]
        if total == 0:
            return "the table has no conversations"
        why = []
        for i, (name, _) in enumerate(checks):
            nonnull, ok = row[2 + 2 * i], row[3 + 2 * i]
            if ok:
                continue
            col = {"languages": "language", "surfaces": "surface", "dates": "created_at"}[name]
            if nonnull == 0:
                hint = {"languages": "the source gives no language: drop `languages` or add one",
                        "surfaces": "the source gives no surface: drop `surfaces`",
                        "dates": "the source has no timestamps: drop `start`/`end`"}[name]
                why.append(f"{col} is null in all {total:,} conversations ({hint})")
            elif name == "dates":
                lo, hi = s.con.execute(f"SELECT min(created_at), max(created_at) FROM {src.sql()}").fetchall()[0]
                why.append(f"no conversation has created_at in [{rules.start}, {rules.end}) (the data spans "
                           f"{lo} to {hi})")
            else:
                top = s.con.execute(f"SELECT {col}, count(*) AS k FROM {src.sql()} WHERE {col} IS NOT NULL "
                                    f"GROUP BY 1 ORDER BY k DESC, 1 LIMIT 5").fetchall()
                wanted = rules.languages if name == "languages" else rules.surfaces
                why.append(f"no conversation has {col} in {list(wanted)} (most common: "
                           + ", ".join(f"{v} {k:,}" for v, k in top) + ")")
        if why:
            return f"0 of {total:,} conversations pass the eligibility rules: " + "; ".join(why)
        if passing:
            turns = s.con.execute(f"SELECT count(*) FROM ({_turns_sql(src.sql(), plan, rules, None)})").fetchall()[0][0]
            if turns:
                return ""
            relaxed = EligibilityRules(min_chars=0, allow_multimodal=True)
            any_turns = s.con.execute(
                f"SELECT count(*) FROM ({_turns_sql(src.sql(), plan, relaxed, None)})").fetchall()[0][0]
            limits = rules.model_dump(include={"min_chars", "max_chars", "allow_multimodal", "min_turn", "max_turn"})
            return (f"{passing:,} of {total:,} conversations pass the conversation filters, but none of their "
                    f"{any_turns:,} user turns passes the turn rules ({', '.join(f'{k}={v}' for k, v in limits.items())})"
                    + ("; the messages may not parse as chat messages (role/content)" if any_turns == 0 else ""))
        return (f"0 of {total:,} conversations have a conversation_id and messages")


def _largest_remainder(n: int, shares: Mapping[str, float]) -> dict[str, int]:
    total = sum(shares.values())
    quotas = {k: n * v / total for k, v in shares.items()}
    alloc = {k: int(math.floor(q)) for k, q in quotas.items()}
    left = n - sum(alloc.values())
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - alloc[k]), k))[:left]:
        alloc[k] += 1
    return alloc


def _check_strata(strata: Mapping[Any, float]) -> dict[str, float]:
    if not isinstance(strata, Mapping) or not strata:
        raise ValueError("strata must be a non-empty mapping of stratum value -> target share")
    out: dict[str, float] = {}
    for k, v in strata.items():
        v = float(v)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"stratum {k!r}: share must be a finite number >= 0, got {v}")
        out[str(k)] = out.get(str(k), 0.0) + v
    if sum(out.values()) <= 0:
        raise ValueError("strata shares sum to 0")
    return out


def _tau_hex(p: float) -> str:
    if p >= 1:
        return _TAU_ALL
    bits = 4 * _KEY_DIGITS
    return format(min(2**bits - 1, int(p * 2**bits)), f"0{_KEY_DIGITS}x")


def _pilot_table(src: _Source, target_rows: int) -> pa.Table:
    """~``target_rows`` conversations: the head of a few row groups spread evenly over the log.

    Read with pyarrow in streaming mode, which fetches only the first pages of each column
    chunk (DuckDB reads whole column chunks, ~30 ms for each row group touched)."""
    groups = [(f, i, rows) for f, sizes in zip(src.files, src.row_groups)
              for i, rows in enumerate(sizes) if rows]
    k = min(_PILOT_ROW_GROUPS, len(groups))
    picked = [groups[int((j + 0.5) * len(groups) / k)] for j in range(k)]
    width = max(1, -(-target_rows // k))
    wanted = ["conversation_id", "messages", "source", *METADATA_COLUMNS]
    handles: dict[str, pq.ParquetFile] = {}
    tables = []
    for f, i, rows in picked:
        pf = handles.get(f) or handles.setdefault(f, pq.ParquetFile(f, pre_buffer=False,
                                                                    buffer_size=1 << 20))
        cols = [c for c in wanted if c in pf.schema_arrow.names]
        batch = next(pf.iter_batches(batch_size=min(width, rows), row_groups=[i], columns=cols))
        tables.append(pa.Table.from_batches([batch]))
    try:
        return pa.concat_tables(tables, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.concat_tables(tables, promote_options="permissive")


def _estimate_turns(s: _Session, src: _Source, rules: EligibilityRules) -> float | None:
    """Estimated number of eligible user turns in the whole log, from a small pilot read."""
    total = src.total_rows
    if src.table is not None or total < _PILOT_MIN_ROWS:
        return None
    pilot = _pilot_table(src, _PILOT_ROWS)
    s.con.register("__depsim_pilot", pilot)
    try:
        plan = _plan(_Source(table=pilot, columns=set(pilot.column_names)), rules, None, None, ())
        turns = s.con.execute(
            f"SELECT count(*) FROM ({_turns_sql('__depsim_pilot', plan, rules, None)})").fetchall()[0][0]
    finally:
        s.con.unregister("__depsim_pilot")
    return turns * total / pilot.num_rows


def sample_prefixes(source: Any, n: int, rules: EligibilityRules | None = None, seed: int = 0,
                    strata: Mapping[Any, float] | None = None, stratum_column: str | None = None,
                    *, extra_columns: Sequence[str] = (), threads: int | None = None,
                    memory_limit: str | None = None, spill_dir: str | None = None) -> pd.DataFrame:
    """Sample ``n`` eligible user turns uniformly without replacement and return their prefixes.

    Parameters
    ----------
    source:
        A Parquet path, a glob, a directory of ``*.parquet``, a list of those, or a pandas /
        pyarrow table, in the canonical conversation-table format (``conversation_id``,
        ``messages`` as a JSON string, ``source``; optional ``model``, ``language``,
        ``surface``, ``created_at``, stratum columns).
    n:
        Sample size (> 0). If fewer eligible turns exist, all are returned with a
        :class:`SamplingWarning`.
    rules:
        :class:`EligibilityRules` (default: every non-empty, text-only user turn).
    seed:
        Integer; the sample is the ``n`` eligible turns with the smallest
        :func:`turn_hash` ``(seed, conversation_id, user_ordinal)``.
    strata, stratum_column:
        Stratified sampling: ``strata`` maps values of ``stratum_column`` to target shares of
        the sample (normalised to sum 1; values not listed, or with share 0, are not sampled).
        ``n`` is split by largest remainder and each stratum is sampled uniformly; ``weight`` is
        then ``(N_s / N) / (n_s / n)`` (population share over sample share, with ``N_s`` the
        eligible turns of stratum ``s`` among the listed strata), so weights average 1 and
        weighted means estimate per-turn rates of the listed strata's population. Without
        ``strata``, ``stratum_column`` is just carried into the output.
    extra_columns:
        More input columns to carry into the output (e.g. ``["tools"]``).
    threads, memory_limit, spill_dir:
        DuckDB settings: up to 4 threads by default; ``memory_limit`` such as ``"4GB"`` (default
        DuckDB's own, 80 % of the machine's memory); what does not fit spills to a private
        folder made under ``spill_dir`` (default the system temp folder) and removed after.

    Returns
    -------
    pandas.DataFrame in hash order (the first ``k`` rows are the sample of size ``k``), columns
    ``prefix_id, conversation_id, turn_index, messages, next_message, source, weight, model,
    language, surface, created_at`` (+ stratum / extra columns), ``user_ordinal, chars``.
    ``messages`` is the JSON array of ``messages[0..turn_index]`` (everything up to and including
    the sampled user message; JSON-equivalent to the input, re-serialised compactly), and
    ``next_message`` the JSON of the message right after it if that is an assistant message,
    else null.
    """
    n, seed = _as_int(n, "n"), _as_int(seed, "seed")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    rules = _rules(rules)
    shares = None
    if strata is not None:
        if stratum_column is None:
            raise ValueError("strata given without stratum_column")
        shares = {k: v for k, v in _check_strata(strata).items() if v > 0}
    extra_columns = [c for c in extra_columns if c not in (*REQUIRED_COLUMNS, *METADATA_COLUMNS)]
    needed = [*REQUIRED_COLUMNS, *rules.needed_columns(), *extra_columns]
    if stratum_column is not None:
        needed.append(stratum_column)
    src = _resolve(source, needed)
    plan = _plan(src, rules, stratum_column, list(shares) if shares else None, extra_columns)

    with _Session(src, threads, memory_limit, spill_dir) as s:
        if shares is not None:
            df, pop = _sample_stratified(s, src, plan, rules, seed, n, shares)
        else:
            df, pop = _sample_uniform(s, src, plan, rules, seed, n), None

    if len(df) < n:
        warnings.warn(f"only {len(df)} eligible user turns for n={n}; returning all of them",
                      SamplingWarning, stacklevel=2)
    return _finish(df, pop, plan)


def _rules(rules: EligibilityRules | Mapping[str, Any] | None) -> EligibilityRules:
    if rules is None:
        return EligibilityRules()
    return rules if isinstance(rules, EligibilityRules) else EligibilityRules.model_validate(rules)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    return int(value.__index__())  # ints and numpy integers


def _arrow(s: _Session, sql: str, views: bool = False) -> pa.Table:
    """Run ``sql`` and fetch the result as an Arrow table. With ``views``, strings may come as
    Arrow string views (``string_view``), which DuckDB hands over without copying the text
    (DuckDB >= 1.1 with pyarrow >= 16; otherwise they come as plain strings). A batch whose
    text exceeds 2 GiB cannot be a valid view array (32-bit offsets; DuckDB 2.0 writes them
    anyway, and reading them crashes): the query then runs again without views."""
    table = _arrow_once(s, sql, views)
    if views and any(_is_view(c.type) and any(b is not None and b.size >= 2**31 for ch in c.chunks
                                               for b in ch.buffers()[2:]) for c in table.columns):
        log.info("a result batch holds more than 2 GiB of text; fetching it again without string views")
        del table
        s.con.execute("SET arrow_large_buffer_size = true")  # 64-bit offsets
        try:
            table = _arrow_once(s, sql, False)
        finally:
            s.con.execute("RESET arrow_large_buffer_size")
    return table


def _arrow_once(s: _Session, sql: str, views: bool) -> pa.Table:
    on = views and _VIEWS and s.set_string_views(True)
    try:
        rel = s.con.sql(sql)
        # streamed in batches where DuckDB can: the result (long prefixes) then never has to fit
        # in DuckDB's memory limit as a whole
        for name in ("to_arrow_reader", "fetch_record_batch"):  # DuckDB 2.x, 1.x
            if hasattr(rel, name):
                return getattr(rel, name)(_STREAM_ROWS).read_all()
        for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):  # DuckDB 2.x, 1.x, older
            if hasattr(rel, name):
                result = getattr(rel, name)()
                return result.read_all() if isinstance(result, pa.RecordBatchReader) else result
        raise RuntimeError("this DuckDB cannot return Arrow tables")
    finally:
        if on:
            s.set_string_views(False)


_VIEWS = all(hasattr(m, a) for m, a in ((pa, "string_view"), (pa.types, "is_string_view"),
                                        (pa.types, "is_binary_view")))


def _is_view(t: pa.DataType) -> bool:
    return _VIEWS and (pa.types.is_string_view(t) or pa.types.is_binary_view(t))


def _no_views(t: pa.DataType) -> pa.DataType:
    """``t`` with string/binary views replaced by large strings/binaries, nested types too."""
    if not _VIEWS:
        return t
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    if pa.types.is_dictionary(t):
        return pa.dictionary(t.index_type, _no_views(t.value_type), t.ordered)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_no_views(f.type)) for f in t])
    if pa.types.is_map(t):
        return pa.map_(_no_views(t.key_type), _no_views(t.item_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(_no_views(t.value_type)), t.list_size)
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_no_views(t.value_type)))
    if pa.types.is_list(t) or getattr(pa.types, "is_list_view", lambda _: False)(t) \
            or getattr(pa.types, "is_large_list_view", lambda _: False)(t):
        return pa.list_(t.value_field.with_type(_no_views(t.value_type)))
    return t


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    t = _no_views(col.type)
    return col if t == col.type else col.cast(t)


def _gather_views(arr: pa.Array, idx: np.ndarray) -> pa.Array:
    """The rows ``idx`` of the string/binary-view array ``arr``, as a plain large string/binary
    array: only the 16-byte views are gathered (in numpy); the text is copied once, by the cast,
    straight into its new order."""
    bufs = arr.buffers()
    views = np.frombuffer(bufs[1], dtype=np.uint8)[16 * arr.offset:16 * (arr.offset + len(arr))]
    views = np.ascontiguousarray(views.reshape(-1, 16)[idx])
    validity, nulls = None, 0
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)[idx]
        nulls = int(len(idx) - valid.sum())
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    out = pa.Array.from_buffers(arr.type, len(idx), [validity, pa.py_buffer(views), *bufs[2:]],
                                null_count=nulls)
    return out.cast(_no_views(arr.type))


def _take(col: pa.ChunkedArray, order: pa.Array, pool: ThreadPoolExecutor | None = None,
          pieces: int = 1) -> pa.ChunkedArray:
    """``col`` reordered by ``order``, without string views. A string-view column is gathered
    by :func:`_gather_views`, in ``pieces`` parts on ``pool`` (pyarrow's take would concatenate
    the chunks, copying the text, then copy it again)."""
    if not _is_view(col.type) or len(order) == 0:
        return _plain(col).take(order)
    arr = col.combine_chunks()  # the views are concatenated, the text buffers shared
    parts = np.array_split(order.to_numpy(), pieces)
    if pool is None or pieces == 1:
        return pa.chunked_array([_gather_views(arr, p) for p in parts])
    return pa.chunked_array(list(pool.map(lambda p: _gather_views(arr, p), parts)))


def _run(s: _Session, sql: Callable[[int | None], str], limit: int | None,
         alloc: Mapping[str, int] | None) -> pd.DataFrame:
    """Run a sampling pass (``sql(cap)`` builds it, see :func:`_sample_sql`) and return its first
    ``limit`` rows in hash order (per stratum: the first ``alloc[s]``).

    The pass first runs without a top-N in DuckDB, capped at 1.5x the rows wanted (+1000): the
    thresholds let through little more than that (exactly that many on the exact routes). A
    capped result may be incomplete, and the pass is then rerun with the top-N in DuckDB
    (bounded memory). Results come via Arrow (~3x faster than DuckDB's own pandas conversion
    for long strings); the order and the rows kept are worked out on the small key columns, and
    the prefix texts are copied once, into their final order (see :func:`_take`)."""
    want = sum(alloc.values()) if alloc is not None else limit
    table = None
    if want is not None:
        cap = int(_CAP_FACTOR * want) + _CAP_SLACK
        table = _arrow(s, sql(cap), views=True)
        if table.num_rows >= cap:
            log.info("sampling pass hit its cap of %d rows; rerunning it with a top-N", cap)
            table = None
    if table is None:
        table = _arrow(s, sql(None), views=True)
    keys = ["__h", "conversation_id", "user_ordinal", "source", "turn_index"]
    order = pc.sort_indices(pa.table([_plain(table.column(k)) for k in keys], names=keys),
                            [(c, "ascending") for c in keys])
    if alloc is not None:
        strata = _plain(table.column("__s")).take(order).to_pandas()
        keep = strata.groupby(strata, sort=False).cumcount() < strata.map(alloc).fillna(0)
        order = order.filter(pa.array(keep.to_numpy(dtype=bool)))
    elif limit is not None:
        order = order[:limit]
    names, pieces = table.column_names, max(1, min(s.threads, len(order) // 20_000))
    with ThreadPoolExecutor(pieces) as pool:  # the copies of large texts run in parallel
        columns = [_take(table.column(i), order, pool, pieces) for i in range(table.num_columns)]
    del table
    return pa.table(columns, names=names).to_pandas()


def _sample_uniform(s: _Session, src: _Source, plan: _Plan, rules: EligibilityRules,
                    seed: int, n: int) -> pd.DataFrame:
    est = _estimate_turns(s, src, rules)
    if est is not None and est > 0:
        # one pass with a threshold that should let through ~10 % more eligible turns than n;
        # if it let through fewer than n, widen it by what was missing and pass again
        p = (1.1 * n + 5 * math.sqrt(n)) / est
        while p <= _FAST_MAX_SHARE:
            table = _run(s, partial(_sample_sql, src.sql(), plan, rules, seed, _lit(_tau_hex(p)), n, None),
                         n, None)
            if len(table) >= n or p >= 1:  # enough, or every turn was let through
                return table
            log.info("threshold %.3g let through %d < %d eligible turns; widening it", p, len(table), n)
            p = min(1.0, p * 1.5 * n / max(len(table), n / 20))
    # exact route: one pass for the n-th smallest hash, then the sampling pass
    count, hs = s.con.execute(
        f"SELECT count(*), min(__h, {n}) FROM ({_turns_sql(src.sql(), plan, rules, seed)})").fetchall()[0]
    if count == 0:  # an empty result with the right columns, without another pass
        return _run(s, partial(_sample_sql, f"(SELECT * FROM {src.sql()} LIMIT 0)", plan, rules, seed,
                               "''", 0, None), 0, None)
    return _run(s, partial(_sample_sql, src.sql(), plan, rules, seed, _lit(max(hs)), n, None), n, None)


def _sample_stratified(s: _Session, src: _Source, plan: _Plan, rules: EligibilityRules, seed: int,
                       n: int, shares: Mapping[str, float]) -> tuple[pd.DataFrame, dict[str, int]]:
    alloc = {k: v for k, v in _largest_remainder(n, shares).items() if v > 0}
    if not alloc:
        raise ValueError("no stratum has a positive allocation")
    kmax = max(alloc.values())
    rows = s.con.execute(
        f"SELECT __s, count(*), min(__h, {kmax}) FROM ({_turns_sql(src.sql(), plan, rules, seed)}) "
        f"GROUP BY __s").fetchall()
    pop = {k: 0 for k in alloc}
    taus = {}
    for key, count, hs in rows:
        if key in alloc:
            pop[key] = count
            taus[key] = sorted(hs)[min(alloc[key], len(hs)) - 1]
    for key, want in alloc.items():
        if pop[key] < want:
            warnings.warn(f"stratum {key!r}: only {pop[key]} eligible user turns for an allocation "
                          f"of {want}; taking all of them", SamplingWarning, stacklevel=3)
    if not taus:  # nothing eligible: an empty result with the right columns, without a pass
        return _run(s, partial(_sample_sql, f"(SELECT * FROM {src.sql()} LIMIT 0)", plan, rules, seed,
                               "''", None, alloc), None, alloc), pop
    tau = "CASE __s " + " ".join(f"WHEN {_lit(k)} THEN {_lit(t)}" for k, t in taus.items()) + " ELSE '' END"
    return _run(s, partial(_sample_sql, src.sql(), plan, rules, seed, tau, None, alloc), None, alloc), pop


def _finish(df: pd.DataFrame, pop: Mapping[str, int] | None, plan: _Plan) -> pd.DataFrame:
    df = df.rename(columns={"__prefix": "messages", "__next": "next_message"})
    if pop is None:
        df["weight"] = 1.0
    elif len(df):
        counts = df["__s"].value_counts()
        big_n = sum(pop[k] for k in counts.index)
        factor = {k: (pop[k] / big_n) / (counts[k] / len(df)) for k in counts.index}
        df["weight"] = df["__s"].map(factor).astype(float)
    else:
        df["weight"] = pd.Series(dtype=float)
    meta = [c for c in plan.names if c not in ("conversation_id", "source", "__s")]
    cols = [*OUTPUT_COLUMNS, *meta, "user_ordinal", "chars"]
    out = df[cols]
    out.attrs["population"] = dict(pop) if pop is not None else None
    return out
