"""Readers: conversation logs, public chat data sets and challenging-prompt sets into the
canonical conversation table.

The canonical table (one row per conversation; what ``depsim.sampling`` and stage 1 read):

===================  =========================================================================
``conversation_id``  str, unique
``messages``         str: JSON array of OpenAI chat messages (``role`` system/user/assistant/
                     tool, ``content`` str/null/list of parts, optional ``tool_calls``,
                     ``tool_call_id``, ``name``, ``refusal``)
``tools``            str (JSON array of tool schemas) or null
``source``           str (``openai_jsonl``, ``wildchat``, ``hh_rlhf:harmless-base-test``, ...)
``model``            str or null: the model that served the conversation
``language``         str or null: ISO 639-1 code where known ("en"); data sets that give names
                     ("English") are mapped, and the name is kept in ``language_name``
``surface``          str or null ("chat" for public chat logs, "eval" for prompt sets)
``created_at``       timestamp (UTC, no zone) or null
extras               per format: ``redacted``, ``toxic``, ``moderation_flagged``, ``category``,
                     ``message_meta`` (JSON array aligned with ``messages``: each message's
                     fields that are not OpenAI message fields, e.g. WildChat's per-turn
                     ``redacted``/``toxic``/``timestamp``), ``meta`` (JSON object: the
                     record's other fields), ...; from WildChat / LMSYS Parquet the record's
                     nested fields (``openai_moderation``, ``detoxify_moderation``) are
                     their own columns with the input's Arrow type instead of JSON in ``meta``,
                     and ``message_meta`` is a list of structs with the turns' Arrow types
===================  =========================================================================

Public API: :func:`read_conversations`, :func:`read_prompt_set`, :func:`convert`,
:func:`input_files`, :class:`ReadResult`, :class:`InputError`, :data:`FORMATS`,
:data:`PROMPT_SETS`, :data:`IDENTIFYING_FIELDS`.

Bad input is never dropped silently. Each bad record raises :class:`InputError`, whose message
is one line naming the file and the 1-based line (JSONL, CSV) or the 0-based record index
(JSON arrays, Parquet, hub data sets), and the reason. With ``quarantine=<path>`` bad records
are written there instead, one JSON object per line (``file``, ``line``, ``record``,
``reason``, ``message``, and ``raw``: null, or with ``quarantine_raw=True`` the record's text
cut to 2,000 characters, since it may hold personal data), and counted in the result. Errors
that concern the whole file (empty, not JSONL, UTF-16, a corrupt gzip/zstd or Parquet file, a
broken JSON array, missing CSV columns) raise even with a quarantine. Blank lines are not
records. An output or quarantine path that is one of the inputs is refused.

Fields that identify people (:data:`IDENTIFYING_FIELDS`: WildChat's ``hashed_ip``, ``header``
with the user agent, ``country``, ``state``) are left out unless ``keep_identifying=True``.

Reading streams: JSONL line by line, JSON arrays incrementally, Parquet by record batch.
Hub-layout Parquet (WildChat, LMSYS-Chat-1M) is flattened and validated in bulk by DuckDB;
OpenAI-messages and ShareGPT JSONL are parsed in blocks of lines by Arrow's JSON reader
against an explicit schema and flattened and validated by DuckDB (a block holding a field
outside that schema, a line Arrow cannot read, a line with a control byte or that is not one
object is split down to the lines that need it). The records that fail the bulk test (and
duplicate ids) go through the per-record path, which names their reason and line, so both
paths give the same table and the same quarantine. :func:`convert`
writes the output in row groups from a second thread, so memory stays bounded by a few chunks.
"""
from __future__ import annotations

import bisect
import codecs
import csv
import glob as _glob
import gzip
import io
import itertools
import json
import math
import os
import re
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from queue import Queue
from typing import Any, Callable, Iterable, Iterator

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq
from tqdm import tqdm

from depsim.params import FORMATS, HUB_FORMATS, MEMORY_LIMIT_PATTERN, PROMPT_SETS, PUBLIC_FORMATS

__all__ = [
    "FORMATS",
    "PROMPT_SETS",
    "PUBLIC_FORMATS",
    "CANONICAL_COLUMNS",
    "InputError",
    "ReadResult",
    "IDENTIFYING_FIELDS",
    "convert",
    "input_files",
    "read_conversations",
    "read_json_records",
    "read_prompt_set",
    "refuse_overwrite",
]

#: Conversation formats of :func:`read_conversations`.

ROLES = ("system", "user", "assistant", "tool")
#: Role spellings mapped onto the four canonical roles (OpenAI's newer name for system).
ROLE_ALIASES = {"developer": "system"}
#: Message keys kept in ``messages``; any other key moves to ``message_meta``.
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "refusal")
TEXT_PART_TYPES = ("text", "input_text", "output_text")
RAW_CHARS = 2_000
DEFAULT_MAX_MESSAGE_CHARS = 1_000_000
#: longest JSONL line read (bytes) unless a longer message limit needs more
DEFAULT_MAX_LINE_BYTES = 256 << 20
DEFAULT_CHUNK_ROWS = 10_000

_S, _B, _TS = pa.string(), pa.bool_(), pa.timestamp("us")
CANONICAL_COLUMNS: tuple[str, ...] = ("conversation_id", "messages", "tools", "source", "model", "language",
                                      "surface", "created_at")
_BASE = [("conversation_id", _S), ("messages", _S), ("tools", _S), ("source", _S), ("model", _S),
         ("language", _S), ("surface", _S), ("created_at", _TS)]
_EXTRAS: dict[str, list[tuple[str, pa.DataType]]] = {
    "openai_jsonl": [("message_meta", _S), ("meta", _S)],
    "wildchat": [("language_name", _S), ("redacted", _B), ("toxic", _B), ("moderation_flagged", _B),
                 ("country", _S), ("state", _S), ("message_meta", _S), ("meta", _S)],
    "lmsys": [("language_name", _S), ("redacted", _B), ("moderation_flagged", _B), ("message_meta", _S),
              ("meta", _S)],
    "sharegpt": [("message_meta", _S), ("meta", _S)],
    "hh_rlhf": [("rejected", _S)],
    "xstest": [("category", _S), ("label", _S), ("focus", _S), ("note", _S)],
    "harmbench": [("category", _S), ("functional_category", _S), ("behavior", _S), ("context", _S),
                  ("tags", _S)],
    "strongreject": [("category", _S), ("prompt_source", _S)],
    "simple_safety_tests": [("category", _S), ("prompt_type", _S)],
    "advbench": [("affirmative_target", _S)],
    "jailbreakbench": [("category", _S), ("goal", _S), ("behavior", _S), ("method", _S), ("response", _S),
                       ("jailbroken", _B), ("jailbroken_llama_guard1", _B)],
}

NOTES = {
    "wildchat": "Public data (WildChat): WildChat-1M and WildChat-4.8M drop the conversations that OpenAI "
                "Moderation or Detoxify flagged (only the gated -Full variants keep them) and redact PII "
                "(`redacted`), so a forecast seeded from them under-represents disallowed content.",
    "lmsys": "Public data (LMSYS-Chat-1M): Chatbot Arena and Vicuna demo users, not a product's traffic; "
             "PII is redacted (`redacted`).",
    "sharegpt": "Public data (ShareGPT): conversations users chose to share, a self-selected sample.",
    "hh_rlhf": "Public data (Anthropic HH-RLHF): crowdworker red-team conversations with an early model, "
               "adversarial by design, not production traffic.",
}
_PROMPT_NOTE = "Challenging-prompts set ({}): adversarial evaluation prompts, not deployment traffic."

#: Language names used by WildChat (lingua) and LMSYS-Chat-1M (polyglot) -> ISO 639-1.
LANGUAGE_CODES = {
    "afrikaans": "af", "albanian": "sq", "arabic": "ar", "armenian": "hy", "azerbaijani": "az", "basque": "eu",
    "belarusian": "be", "bengali": "bn", "bokmal": "nb", "bosnian": "bs", "bulgarian": "bg", "catalan": "ca",
    "chinese": "zh", "croatian": "hr", "czech": "cs", "danish": "da", "dutch": "nl", "english": "en",
    "esperanto": "eo", "estonian": "et", "finnish": "fi", "french": "fr", "ganda": "lg", "georgian": "ka",
    "german": "de", "greek": "el", "gujarati": "gu", "hebrew": "he", "hindi": "hi", "hungarian": "hu",
    "icelandic": "is", "indonesian": "id", "irish": "ga", "italian": "it", "japanese": "ja", "kazakh": "kk",
    "korean": "ko", "latin": "la", "latvian": "lv", "lithuanian": "lt", "macedonian": "mk", "malay": "ms",
    "maori": "mi", "marathi": "mr", "mongolian": "mn", "norwegian": "no", "nynorsk": "nn", "persian": "fa",
    "polish": "pl", "portuguese": "pt", "punjabi": "pa", "romanian": "ro", "russian": "ru", "serbian": "sr",
    "shona": "sn", "slovak": "sk", "slovene": "sl", "slovenian": "sl", "somali": "so", "sotho": "st",
    "spanish": "es", "swahili": "sw", "swedish": "sv", "tagalog": "tl", "tamil": "ta", "telugu": "te",
    "thai": "th", "tsonga": "ts", "tswana": "tn", "turkish": "tr", "ukrainian": "uk", "urdu": "ur",
    "vietnamese": "vi", "welsh": "cy", "xhosa": "xh", "yoruba": "yo", "zulu": "zu", "malayalam": "ml",
    "kannada": "kn", "nepali": "ne", "sinhala": "si", "burmese": "my", "khmer": "km", "lao": "lo",
    "uzbek": "uz", "kyrgyz": "ky", "tajik": "tg", "pashto": "ps", "kurdish": "ku", "amharic": "am",
}
_NO_LANGUAGE = {"", "unknown", "nolang", "none", "und"}
#: Record and per-message fields that identify people (WildChat's IP hash, browser headers with
#: the user agent, country and state). Left out of the table unless ``keep_identifying=True``.
IDENTIFYING_FIELDS: frozenset[str] = frozenset({"hashed_ip", "header", "country", "state"})


class InputError(ValueError):
    """Bad input. The message is one line: ``<file>:<line>: <reason>`` (JSONL, CSV) or
    ``<file>: record <i>: <reason>`` (JSON arrays, Parquet, hub data sets; 0-based)."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 record: int | None = None, reason: str = "invalid_file", kept_before: int | None = None):
        super().__init__(_one_line(message))
        self.file, self.line, self.record, self.reason = file, line, record, reason
        #: records kept before this one (None: not known); 0 with a shape reason hints a wrong layout
        self.kept_before = kept_before


@dataclass
class ReadResult:
    """What a read produced.

    - ``table``: the canonical conversation table (``None`` from :func:`convert`, which writes
      it to ``path`` instead of holding it in memory).
    - ``quarantined`` / ``reasons``: how many bad records went to the quarantine file, by
      reason code (``invalid_json``, ``unknown_role``, ``duplicate_id``, ...).
    - ``records``: records read in all; ``rows + quarantined == records`` (nothing is lost).
    - ``notes``: what a report must say about this source (public-data biases) and about
      anything kept but incomplete.
    """
    table: pd.DataFrame | None
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    records: int = 0
    rows: int = 0
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    path: Path | None = None
    quarantine: Path | None = None


# --------------------------------------------------------------------------------------------
# Locations, errors, small helpers


@dataclass(frozen=True)
class _Loc:
    file: str
    line: int | None = None
    record: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}:{self.line}"
        if self.record is not None:
            return f"{self.file}: record {self.record}"
        return self.file

    def short(self) -> str:
        return f"line {self.line}" if self.line is not None else f"record {self.record}"


class _Bad(Exception):
    """One bad record: a reason code and a one-line detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, _one_line(detail)


def _one_line(s: str) -> str:
    return str(s).replace("\r", "\\r").replace("\n", "\\n")


def _fatal(loc: _Loc | str, detail: str) -> InputError:
    if isinstance(loc, _Loc):
        return InputError(f"{loc}: {detail}", file=loc.file, line=loc.line, record=loc.record)
    return InputError(f"{loc}: {detail}", file=str(loc))


def _tn(v: Any) -> str:
    """Name of a JSON-ish type, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return f"a {type(v).__name__}"


def _json_default(v: Any):
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "backslashreplace")
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def _dumps(v: Any) -> str:
    """Compact JSON text; non-finite numbers (NaN, Infinity: not JSON) are written as null."""
    try:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(v), ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _finite(v: Any) -> Any:
    """``v`` with every non-finite float replaced by None (nested lists and dicts too)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy scalars
        return _finite(v.item())
    return v


def _raw_text(raw: Any) -> str:
    """Raw record text for the quarantine file, cut to 2,000 characters."""
    if raw is None:
        return ""
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw[: RAW_CHARS * 4]).decode("utf-8", "backslashreplace")[:RAW_CHARS]
    if isinstance(raw, str):
        return raw[:RAW_CHARS]
    try:
        return _dumps(raw)[:RAW_CHARS]
    except (TypeError, ValueError):
        return repr(raw)[:RAW_CHARS]


def _str(rec: dict, key: str, *, required: bool = False) -> str | None:
    v = rec.get(key)
    if v is None:
        if required:
            raise _Bad("missing_field", f"missing required field {key!r}")
        return None
    if not isinstance(v, str):
        raise _Bad("wrong_type", f"{key} is {_tn(v)}, expected a string")
    return v


def _bool(rec: dict, key: str) -> bool | None:
    v = rec.get(key)
    if v is None or isinstance(v, bool):
        return v
    raise _Bad("wrong_type", f"{key} is {_tn(v)}, expected true/false")


def _req(rec: dict, key: str) -> Any:
    if key not in rec or rec[key] is None:
        raise _Bad("missing_field", f"missing required field {key!r}")
    return rec[key]


def _conv_id(rec: dict, keys: tuple[str, ...], fallback: str | None) -> str:
    """The record's id from the first of ``keys`` present; ``fallback`` if none (else bad)."""
    for k in keys:
        v = rec.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise _Bad("wrong_type", f"{k} is {_tn(v)}, expected a string")
        v = str(v)
        if not v.strip():
            raise _Bad("missing_field", f"{k} is empty")
        return v
    if fallback is None:
        raise _Bad("missing_field", f"missing required field {keys[0]!r}")
    return fallback


#: a quoted value in a message ('...' or "..."), long enough to carry personal data
_QUOTED = re.compile(r"(?<!\w)('[^']{13,}'|\"[^\"]{13,}\")(?!\w)")


def _elide(m: re.Match) -> str:
    return f"<{len(m.group(0)) - 2} characters>"


_SLASHED = re.compile(r"(\d{1,2})[/.](\d{1,2})[/.](\d{2,4})\b")


def _timestamp(v: Any, key: str = "created_at") -> datetime | None:
    """A UTC timestamp without zone from a datetime, ISO string, or epoch number (s/ms/us/ns)."""
    if v is None:
        return None
    try:
        if isinstance(v, datetime):
            dt = v.to_pydatetime() if isinstance(v, pd.Timestamp) else v
        elif isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise _Bad("wrong_type", f"{key} is {_tn(v)}, expected a timestamp")
        elif isinstance(v, (int, float)):
            x = float(v)
            if not math.isfinite(x):
                raise ValueError("not finite")
            div = 1e9 if abs(x) >= 1e17 else 1e6 if abs(x) >= 1e14 else 1e3 if abs(x) >= 1e11 else 1.0
            dt = datetime.fromtimestamp(x / div, tz=timezone.utc)
        else:
            s = v.strip()
            if (m := _SLASHED.match(s)) and int(m[1]) != int(m[2]) and int(m[1]) <= 12 and int(m[2]) <= 12:
                # 01/03/2024 would be read month-first and 13/03/2024 day-first: never guess
                raise _Bad("ambiguous_date", f"{key}: {s[:40]!r} reads as day/month or as month/day; write "
                                             "timestamps as ISO 8601 (2024-03-01T12:00) or epoch seconds")
            try:
                dt = datetime.fromisoformat(s)
            except ValueError:
                ts = pd.Timestamp(s)
                if ts is pd.NaT:
                    raise ValueError("empty")
                dt = ts.to_pydatetime()
    except _Bad:
        raise
    except (ValueError, OverflowError, OSError) as e:
        raise _Bad("bad_timestamp", f"{key}: cannot read {str(v)[:60]!r} as a timestamp ({e})") from None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def _language(v: Any, key: str = "language") -> tuple[str | None, str | None]:
    """(ISO code or the value itself, original name) of a language field."""
    if v is None:
        return None, None
    if not isinstance(v, str):
        raise _Bad("wrong_type", f"{key} is {_tn(v)}, expected a string")
    s = v.strip()
    if s.lower() in _NO_LANGUAGE:
        return None, v
    if re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z0-9]+)?", s):
        return s, v
    return LANGUAGE_CODES.get(s.lower(), s), v


# --------------------------------------------------------------------------------------------
# Message validation


def _content_size(content: Any, i: int) -> int:
    """Characters in a message's content; raises _Bad for a wrong type."""
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        n = 0
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise _Bad("wrong_type", f"message {i}: content part {j} is {_tn(part)}, expected an object")
            t = part.get("type")
            if not isinstance(t, str):
                raise _Bad("wrong_type", f"message {i}: content part {j} has no string 'type'")
            if t in TEXT_PART_TYPES:
                text = part.get("text")
                if not isinstance(text, str):
                    raise _Bad("wrong_type", f"message {i}: text part {j} has 'text' {_tn(text)}, expected a string")
                n += len(text)
            elif isinstance(part.get("text"), str):
                # text under another type ("txt") would be read as media: the turn never counts
                raise _Bad("wrong_type", f"message {i}: content part {j} has type {t[:20]!r} and a 'text' field; "
                                         f"the type of a text part is {' or '.join(sorted(TEXT_PART_TYPES))}")
            else:
                n += len(_dumps(part))
        return n
    raise _Bad("wrong_type", f"message {i}: content is {_tn(content)}, expected a string, null or a list of parts")


def _tool_calls(calls: Any, i: int) -> tuple[list[dict], int]:
    if not isinstance(calls, list):
        raise _Bad("bad_tool_call", f"message {i}: tool_calls is {_tn(calls)}, expected an array")
    out, size = [], 0
    for j, c in enumerate(calls):
        if not isinstance(c, dict):
            raise _Bad("bad_tool_call", f"message {i}: tool call {j} is {_tn(c)}, expected an object")
        cid, fn = c.get("id"), c.get("function")
        if not isinstance(cid, str) or not cid:
            raise _Bad("bad_tool_call", f"message {i}: tool call {j} has no string 'id'")
        if c.get("type", "function") != "function":
            raise _Bad("bad_tool_call", f"message {i}: tool call {j} has type {c.get('type')!r}, expected 'function'")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _Bad("bad_tool_call", f"message {i}: tool call {j} has no function name")
        args = fn.get("arguments", "")
        if isinstance(args, (dict, list)):
            args = _dumps(args)  # some logs store parsed arguments; the canonical form is a JSON string
        elif args is None:
            args = ""
        elif not isinstance(args, str):
            raise _Bad("bad_tool_call", f"message {i}: tool call {j} arguments are {_tn(args)}, expected a JSON string")
        size += len(args)
        call = {**c, "type": "function", "function": {**fn, "arguments": args}}
        out.append({"id": call.pop("id"), "type": call.pop("type"), "function": call.pop("function"), **call})
    return out, size


def _legacy_functions(msgs: list | tuple) -> list | tuple:
    """Messages with OpenAI's legacy function calling (an assistant ``function_call`` and a
    ``function`` role answer) rewritten as tool calls and tool messages; ids ``call_<i>`` (the
    index of the calling message). Others are returned as they are."""
    if not any(isinstance(m, dict) and (m.get("function_call") is not None or m.get("role") == "function")
               for m in msgs):
        return msgs
    out, open_calls = [], []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            out.append(m)
            continue
        fc = m.get("function_call")
        if fc is not None and m.get("role") == "assistant":
            if not isinstance(fc, dict) or not isinstance(fc.get("name"), str) or not fc["name"]:
                raise _Bad("bad_tool_call", f"message {i}: function_call has no function name")
            call = {"id": f"call_{i}", "type": "function",
                    "function": {"name": fc["name"], "arguments": fc.get("arguments", "")}}
            m = {k: v for k, v in m.items() if k != "function_call"}
            m["tool_calls"] = [*(m.get("tool_calls") or []), call]
            open_calls.append((fc["name"], call["id"]))
        elif m.get("role") == "function":
            name = m.get("name")
            match = next((c for c in reversed(open_calls) if c[0] == name), open_calls[-1] if open_calls else None)
            if match is None:
                raise _Bad("unmatched_tool_message", f"message {i} (function) answers no earlier function_call")
            open_calls.remove(match)
            m = {**m, "role": "tool", "tool_call_id": match[1]}
        out.append(m)
    return out


def _messages(msgs: Any, max_chars: int) -> tuple[list[dict], list[dict] | None]:
    """Validate and normalise a message list. Returns (messages with only OpenAI keys, per-message
    extra fields or None when there are none). Raises _Bad naming the message index."""
    if not isinstance(msgs, (list, tuple)):
        raise _Bad("wrong_type", f"messages is {_tn(msgs)}, expected an array")
    if not msgs:
        raise _Bad("empty_conversation", "conversation has no messages")
    msgs = _legacy_functions(msgs)
    out: list[dict] = []
    extras: list[dict] = []
    calls: set[str] = set()
    has_user = False
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _Bad("wrong_type", f"message {i} is {_tn(m)}, expected an object")
        if m.get("role") is None:
            raise _Bad("missing_field", f"message {i} has no role")
        role = m["role"]
        if not isinstance(role, str):
            raise _Bad("wrong_type", f"message {i}: role is {_tn(role)}, expected a string")
        role = ROLE_ALIASES.get(role, role)
        if role not in ROLES:
            raise _Bad("unknown_role", f"message {i} has unknown role {role[:40]!r} "
                                       f"(expected system, user, assistant or tool)")
        content = m.get("content")
        if content is None and role != "assistant":
            what = "has no content" if "content" not in m else "has null content"
            raise _Bad("missing_field", f"message {i} ({role}) {what}")
        size = _content_size(content, i)
        msg: dict = {"role": role, "content": content}
        if m.get("tool_calls") is not None:
            if role != "assistant":
                raise _Bad("bad_tool_call", f"message {i} ({role}) has tool_calls; only assistant messages may")
            tc, n = _tool_calls(m["tool_calls"], i)
            size += n
            if tc:
                msg["tool_calls"] = tc
                calls.update(c["id"] for c in tc)
        if role == "assistant" and content is None and "tool_calls" not in msg and not m.get("refusal"):
            raise _Bad("missing_field", f"message {i} (assistant) has neither content nor tool_calls")
        if role == "tool":
            tcid = m.get("tool_call_id")
            if not isinstance(tcid, str) or tcid not in calls:
                raise _Bad("unmatched_tool_message", f"message {i} (tool) has tool_call_id {tcid!r}, which "
                                                     f"matches no earlier assistant tool call")
            msg["tool_call_id"] = tcid
        for k in ("name", "refusal"):
            if m.get(k) is not None:
                if not isinstance(m[k], str):
                    raise _Bad("wrong_type", f"message {i}: {k} is {_tn(m[k])}, expected a string")
                msg[k] = m[k]
        if size > max_chars:
            raise _Bad("message_too_large", f"message {i} ({role}) has {size:,} characters "
                                            f"(limit max_message_chars={max_chars:,}: --max-message-chars)")
        has_user = has_user or role == "user"
        out.append(msg)
        extras.append({k: v for k, v in m.items() if k not in MESSAGE_KEYS})
    if not has_user:
        raise _Bad("no_user_turn", "conversation has no user message")
    return out, (extras if any(extras) else None)


# --------------------------------------------------------------------------------------------
# Record sources: each yields (location, raw, parsed record or _Bad)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _open_binary(path: Path):
    """The file's bytes, decompressed when it is gzip or zstd (told by its first bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == _ZSTD_MAGIC:
        return io.BufferedReader(pa.CompressedInputStream(pa.OSFile(str(path)), "zstd"), 1 << 20)
    return open(path, "rb")


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
              (codecs.BOM_UTF16_BE, "UTF-16"))


def _check_encoding(path: Path) -> None:
    """Raise for a text file in UTF-16/UTF-32 (with a byte order mark, or NUL bytes in every
    other position of its start), which would otherwise read as a "NUL byte" per line."""
    try:
        with _open_binary(path) as fh:
            head = fh.read(256)
    except (OSError, EOFError, zlib.error):
        return  # the reader reports it with its line
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            raise _fatal(_Loc(str(path), 1), f"the file is {name} (it starts with a {name} byte order mark); "
                                             f"depsim reads UTF-8: re-save it as UTF-8 (e.g. iconv -f {name} -t UTF-8)")
    even, odd = head[0::2], head[1::2]
    if len(head) >= 8 and (odd.count(0) >= 0.9 * len(odd) or even.count(0) >= 0.9 * len(even)):
        raise _fatal(_Loc(str(path), 1), "the file looks like UTF-16 without a byte order mark (a NUL byte "
                                         "between characters); depsim reads UTF-8: re-save it as UTF-8")


# fields only one of the two chat-log data sets has: a file that has the other's is misnamed
_ONLY_WILDCHAT = frozenset({"conversation_hash", "toxic", "hashed_ip", "detoxify_moderation", "country", "state"})


def _top_level_keys(path: Path) -> set[str]:
    """The field names of a Parquet file, or of the first record of a JSONL file (empty when
    unreadable: the reader then reports the problem with its line)."""
    try:
        if _magic(path) == b"PAR1":
            return set(pq.read_schema(path).names)
        with _open_binary(path) as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    return set(rec) if isinstance(rec, dict) else set()
    except (OSError, EOFError, zlib.error, ValueError, pa.ArrowException):
        pass
    return set()


def _check_layout(path: Path, fmt: str) -> None:
    """Raise when a file read as WildChat is LMSYS-Chat-1M or the reverse: the records would
    read, but under the other data set's name and provenance note."""
    keys = _top_level_keys(path)
    if fmt == "wildchat" and {"conversation_id", "conversation"} <= keys and not keys & _ONLY_WILDCHAT \
            and keys & {"openai_moderation", "turn"}:
        other = "lmsys"
    elif fmt == "lmsys" and "conversation" in keys and keys & _ONLY_WILDCHAT:
        other = "wildchat"
    else:
        return
    raise _fatal(_Loc(str(path), 1), f"the records look like {other} ({', '.join(sorted(keys)[:8])}), not {fmt}: "
                                     f"read it as {other}, so the report names the right data set")


def _magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def _first_char(path: Path) -> str:
    """First non-whitespace character of a (possibly gzipped) text file ('' if none)."""
    try:
        with _open_binary(path) as fh:
            while True:
                chunk = fh.read(65536)
                if not chunk:
                    return ""
                s = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")
                if s:
                    return chr(s[0])
    except (OSError, EOFError, zlib.error) as e:
        raise _fatal(str(path), f"cannot read the file: {e}") from None


def _jsonl_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[_Loc, bytes, int]]:
    """The lines of a (possibly compressed) JSONL file: (location, bytes, 0), or for a line
    longer than ``max_line_bytes`` (its first bytes, its length), skipped without being held.
    A UTF-8 byte order mark on line 1 is removed; blank lines are included."""
    name, lineno = str(path), 0
    with _open_binary(path) as fh:
        while True:
            try:
                raw = fh.readline(max_line_bytes + 1)
            except (EOFError, OSError, zlib.error) as e:
                raise _fatal(_Loc(name, lineno + 1), f"compressed file is truncated or corrupt ({e})") from None
            if not raw:
                break
            lineno += 1
            loc = _Loc(name, lineno)
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                n = len(raw)
                while True:  # skip the rest of the line without holding it
                    try:
                        more = fh.readline(1 << 20)
                    except (EOFError, OSError, zlib.error) as e:
                        raise _fatal(loc, f"compressed file is truncated or corrupt ({e})") from None
                    n += len(more)
                    if not more or more.endswith(b"\n"):
                        break
                yield loc, raw[:RAW_CHARS], n
                continue
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]
            yield loc, raw, 0


def _jsonl_blocks(path: Path, max_line_bytes: int, max_lines: int,
                  block_bytes: int = 16 << 20) -> Iterator[tuple[int, bytes, int]]:
    """A (possibly compressed) JSONL file in blocks of whole lines: (number of the first line,
    the lines' bytes, 0), at most ``max_lines`` lines a block; or for a line longer than
    ``max_line_bytes`` (its number, its first bytes, its length), skipped without being held
    whole. A UTF-8 byte order mark on line 1 is removed."""
    name, lineno, carry, first = str(path), 1, b"", True
    with _open_binary(path) as fh:
        while True:
            try:
                data = fh.read(block_bytes)
            except (EOFError, OSError, zlib.error) as e:
                raise _fatal(_Loc(name, lineno + carry.count(b"\n")),
                             f"compressed file is truncated or corrupt ({e})") from None
            buf = carry + data
            if not buf:
                return
            if first and buf.startswith(codecs.BOM_UTF8):
                buf = buf[3:]
            first = first and not buf
            end = len(buf) if not data else buf.rfind(b"\n") + 1
            if end == 0:
                if len(buf) > max_line_bytes:  # a line too long: skip the rest of it
                    head, n, more = buf[:RAW_CHARS], len(buf), b""
                    while True:
                        try:
                            more = fh.readline(1 << 20)
                        except (EOFError, OSError, zlib.error) as e:
                            raise _fatal(_Loc(name, lineno), f"compressed file is truncated or corrupt ({e})") from None
                        n += len(more)
                        if not more or more.endswith(b"\n"):
                            break
                    yield lineno, head, n
                    lineno, carry = lineno + 1, b""
                    if not more:
                        return
                    continue
                carry = buf
                continue
            carry, at = buf[end:], 0
            nls = np.flatnonzero(np.frombuffer(buf, np.uint8, count=end) == 10)
            if not data and (not len(nls) or nls[-1] != end - 1):
                nls = np.append(nls, end - 1)  # the last line, without a newline
            for c in range(0, len(nls), max(max_lines, 1)):
                stop = int(nls[min(c + max_lines, len(nls)) - 1]) + 1
                k = min(c + max_lines, len(nls)) - c
                piece = buf[at:stop]
                long = max(map(len, piece.split(b"\n"))) > max_line_bytes if len(piece) > max_line_bytes else False
                if long:  # a line over the limit inside a block: the line reader's answer for each line
                    for j, line in enumerate(piece.split(b"\n")[:k]):
                        if len(line) > max_line_bytes:
                            last = j == k - 1 and not piece.endswith(b"\n")
                            yield lineno + j, line[:RAW_CHARS], len(line) + (0 if last else 1)
                        else:
                            yield lineno + j, line + (b"" if j == k - 1 and not piece.endswith(b"\n") else b"\n"), 0
                else:
                    yield lineno, piece, 0
                lineno += k
                at = stop
            if not data:
                return


def _jsonl_record(loc: _Loc, raw: bytes, long: int, max_line_bytes: int, first: bool,
                  array_hint: str) -> tuple[_Loc, Any, Any]:
    """One non-blank JSONL line as (location, raw, parsed record or _Bad); raises for a JSON
    array given as JSONL (``first``: the file's first record)."""
    if long:
        return loc, raw, _Bad("line_too_long", f"line has {long:,} bytes (limit {max_line_bytes:,})")
    if b"\x00" in raw:
        at = raw.index(b"\x00") + 1
        return loc, raw, _Bad("nul_byte", f"line contains a NUL byte (byte {at})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return loc, raw, _Bad("not_utf8", f"line is not valid UTF-8 (byte {e.start + 1}: "
                                          f"{raw[e.start:e.start + 4]!r})")
    text = text.rstrip("\r\n")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if first and text.lstrip().startswith("["):
            raise _fatal(loc, f"the file is a JSON array, not JSONL (one JSON object per line); "
                              f"{array_hint}") from None
        cut = " (the line ends early: truncated?)" if e.pos >= len(text.rstrip()) else ""
        return loc, raw, _Bad("invalid_json", f"invalid JSON{cut}: {e.msg} at column {e.colno}")
    except RecursionError:
        return loc, raw, _Bad("invalid_json", "invalid JSON: nested too deeply")
    if first and isinstance(obj, list) and (not obj or isinstance(obj[0], dict)):
        raise _fatal(loc, f"the file is a JSON array, not JSONL (one JSON object per line); {array_hint}")
    return loc, raw, obj


def _jsonl(path: Path, max_line_bytes: int, *, array_hint: str) -> Iterator[tuple[_Loc, Any, Any]]:
    seen = False
    for loc, raw, long in _jsonl_lines(path, max_line_bytes):
        if not long and not raw.strip():
            continue  # blank lines are not records
        first, seen = not seen and not long, seen or not long
        yield _jsonl_record(loc, raw, long, max_line_bytes, first, array_hint)
    if not seen:
        raise _fatal(_Loc(str(path), 1), "empty file (no records)")


def _json_array(path: Path) -> Iterator[tuple[_Loc, Any, Any]]:
    """Stream the elements of a top-level JSON array without loading the whole file."""
    name = str(path)
    dec = json.JSONDecoder()
    fh = io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors="strict")
    buf, pos, eof, idx = "", 0, False, 0

    def more() -> None:
        nonlocal buf, pos, eof
        try:
            chunk = fh.read(max(1 << 20, len(buf) - pos))
        except UnicodeDecodeError as e:
            raise _fatal(_Loc(name, record=idx), f"the file is not valid UTF-8 ({e.reason}); a JSON array "
                                                 f"cannot be read past a bad byte") from None
        except (EOFError, OSError, zlib.error) as e:
            raise _fatal(_Loc(name, record=idx), f"compressed file is truncated or corrupt ({e})") from None
        buf, pos = buf[pos:] + chunk, 0
        eof = not chunk

    def skip_ws() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if eof:
                return ""
            more()

    with fh:
        if skip_ws() != "[":
            raise _fatal(name, "expected a JSON array")
        pos += 1
        if skip_ws() == "]":
            raise _fatal(name, "empty JSON array (no records)")
        while True:
            while True:
                try:
                    obj, end = dec.raw_decode(buf, pos)
                except json.JSONDecodeError as e:
                    if not eof:
                        more()
                        continue
                    raise _fatal(_Loc(name, record=idx), f"invalid JSON ({e.msg}); a JSON array cannot be read "
                                                         f"past a syntax error") from None
                except RecursionError:
                    raise _fatal(_Loc(name, record=idx), "invalid JSON: nested too deeply") from None
                if end == len(buf) and not eof and not isinstance(obj, (dict, list)):
                    more()  # a scalar cut by the chunk boundary
                    continue
                break
            raw = buf[pos:end]
            pos = end
            yield _Loc(name, record=idx), raw, obj
            idx += 1
            c = skip_ws()
            if c == ",":
                pos += 1
                skip_ws()
                continue
            if c == "]":
                pos += 1
                if skip_ws() != "":
                    raise _fatal(name, "unexpected data after the JSON array")
                return
            raise _fatal(_Loc(name, record=idx), "invalid JSON array: expected ',' or ']' "
                                                 + ("but the file ends (truncated?)" if c == "" else f"not {c!r}"))


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise _fatal(str(path), f"not a readable Parquet file ({_one_line(e)})") from None


def _parquet(path: Path) -> Iterator[tuple[_Loc, Any, Any]]:
    pf = _parquet_file(path)
    if pf.metadata.num_rows == 0:
        raise _fatal(str(path), "empty Parquet file (no records)")
    idx = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                yield _Loc(str(path), record=idx), None, rec
                idx += 1
    except (pa.ArrowException, OSError) as e:
        raise _fatal(_Loc(str(path), record=idx), f"cannot read the Parquet file ({_one_line(e)})") from None


def _parquet_rows(pf: pq.ParquetFile, rows: list[int]) -> Iterator[dict]:
    """The records at 0-based ``rows`` (ascending) of a Parquet file, as Python dicts."""
    starts, at = [], 0
    for g in range(pf.metadata.num_row_groups):
        starts.append(at)
        at += pf.metadata.row_group(g).num_rows
    cache: tuple[int, pa.Table] | None = None
    for r in rows:
        g = max(0, bisect.bisect_right(starts, r) - 1)
        if cache is None or cache[0] != g:
            cache = (g, pf.read_row_group(g))
        yield cache[1].slice(r - starts[g], 1).to_pylist()[0]


def _hub(hub_id: str, fmt: str) -> Iterator[tuple[_Loc, Any, Any]]:
    """Stream a data set from the Hugging Face hub (needs ``datasets`` and a network)."""
    try:
        import datasets  # noqa: PLC0415
    except ImportError:
        raise InputError(f"{hub_id}: reading a Hugging Face hub id needs the `datasets` package, which is not "
                         f"installed (pip install datasets); or download the data set's files (.parquet or "
                         f".jsonl) and pass their path", file=hub_id) from None
    try:
        ds = datasets.load_dataset(hub_id, split="train", streaming=True)
        it = iter(ds)
    except Exception as e:  # noqa: BLE001 - any failure here is "cannot reach / no access"
        raise InputError(f"{hub_id}: cannot load from the Hugging Face hub (offline, a gated data set without "
                         f"an accepted licence and token, or no such data set): {type(e).__name__}: "
                         f"{_one_line(e)[:300]}", file=hub_id) from None
    idx = 0
    while True:
        try:
            rec = next(it)
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{hub_id}: record {idx}: reading from the hub failed (connection lost?): "
                             f"{type(e).__name__}: {_one_line(e)[:300]}", file=hub_id, record=idx) from None
        yield _Loc(hub_id, record=idx), None, rec
        idx += 1
    if idx == 0:
        raise InputError(f"{hub_id}: the data set has no records", file=hub_id)


def _csv(path: Path) -> Iterator[tuple[_Loc, Any, Any]]:
    """The records of a CSV prompt set, parsed strictly. A lenient parser closes an unterminated
    quote at the next quote in the file and silently merges the rows between into one field; here
    the record that does not parse is quarantined at its first line (``malformed_csv``) and
    reading resumes on the next line, so the rows after it are kept."""
    name = str(path)
    with _open_binary(path) as fh:  # small files: prompt sets, labelled data
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _fatal(_Loc(name, data[:e.start].count(b"\n") + 1), f"the file is not valid UTF-8 ({e.reason})") from None
    lines = list(io.StringIO(text, newline=""))  # ends kept: quoted fields may span lines
    header: list[str] | None = None
    pos = 0
    while pos < len(lines):
        reader = csv.reader(itertools.islice(lines, pos, None), strict=True)
        first = pos + 1  # the 1-based line the record being read starts on
        try:
            for row in reader:
                loc = _Loc(name, first)
                first = pos + reader.line_num + 1
                if header is None:
                    header = row
                    continue
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    yield loc, _dumps(row), _Bad("wrong_columns", f"row has {len(row)} fields, the header has "
                                                                  f"{len(header)}")
                    continue
                yield loc, _dumps(dict(zip(header, row))), dict(zip(header, row))
            break
        except csv.Error as e:
            if header is None:
                raise _fatal(_Loc(name, first), f"malformed CSV header ({e})") from None
            yield (_Loc(name, first), lines[first - 1],
                   _Bad("malformed_csv", "a quote opened in the record starting on this line does not close "
                                         "before the next comma or line end (an unterminated quote?)"))
            pos = first
    if header is None:
        raise _fatal(_Loc(name, 1), "empty file (no header, no records)")


def _csv_header(path: Path) -> list[str]:
    try:
        with io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="") as fh:
            return next(csv.reader(fh), []) or []
    except (UnicodeDecodeError, csv.Error, OSError, EOFError, zlib.error) as e:
        raise _fatal(_Loc(str(path), 1), f"cannot read the CSV header ({_one_line(e)})") from None


def _jbc(path: Path) -> Iterator[tuple[_Loc, Any, Any]]:
    name = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except UnicodeDecodeError as e:
        raise _fatal(name, f"the file is not valid UTF-8 ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise _fatal(_Loc(name, e.lineno), f"invalid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("jailbreaks"), list):
        raise _fatal(name, "not a JailbreakBench artifact (expected an object with a 'jailbreaks' array)")
    params = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
    if not doc["jailbreaks"]:
        raise _fatal(name, "no records ('jailbreaks' is empty)")
    for i, jb in enumerate(doc["jailbreaks"]):
        yield _Loc(name, record=i), jb, (params, jb)


# --------------------------------------------------------------------------------------------
# Converters: one record -> one canonical row (dict); raise _Bad


@dataclass
class _Ctx:
    fmt: str
    stem: str
    loc: _Loc
    max_chars: int
    source: str | None
    warnings: Counter
    index: int = 0  # 0-based ordinal of the record in its file
    lift: tuple[str, ...] = ()  # record fields to keep as their own columns instead of in ``meta``
    drop: frozenset = frozenset()  # identifying fields left out of the table (IDENTIFYING_FIELDS)
    meta: bool = True  # keep the record's other fields in ``meta``
    typed: tuple[str, ...] = ()  # record fields kept as their own typed columns (nested moderation records)
    typed_turns: bool = False  # message_meta as a typed list of structs (not JSON text)


def _finish(row: dict, msgs: list[dict], mmeta: list[dict] | None = None, meta: dict | None = None,
            lift: tuple[str, ...] = (), drop: frozenset = frozenset(), keep_meta: bool = True,
            typed: tuple[str, ...] = (), typed_turns: bool = False) -> dict:
    row["messages"] = _dumps(msgs)
    if drop:
        for k in drop:
            row.pop(k, None)
        if meta:
            meta = {k: v for k, v in meta.items() if k not in drop}
        if mmeta is not None:
            mmeta = [{k: v for k, v in m.items() if k not in drop} for m in mmeta]
            mmeta = mmeta if any(mmeta) else None
    if "message_meta" not in row and mmeta is not None:
        row["message_meta"] = mmeta if typed_turns else _dumps(mmeta)
    if meta and lift:
        for k in lift:  # strings as they are, anything else as its JSON text
            v = meta.pop(k, None)
            row[k] = v if v is None or isinstance(v, str) else _dumps(v)
    if meta and typed:
        for k in typed:  # as read (the column has the input file's type)
            row[k] = meta.pop(k, None)
    if meta and keep_meta:
        row["meta"] = _dumps(meta)
    return row


def _row_openai(rec: Any, c: _Ctx) -> dict:
    if not isinstance(rec, dict):
        raise _Bad("not_an_object", f"record is {_tn(rec)}, expected an object with 'messages'")
    msgs, mmeta = _messages(_req(rec, "messages"), c.max_chars)
    tools = rec.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise _Bad("wrong_type", f"tools is {_tn(tools)}, expected an array of tool objects")
        tools = _dumps(tools) if tools else None
    # OpenAI's own objects stamp their time as `created` (epoch seconds)
    stamp = "created_at" if rec.get("created_at") is not None or "created" not in rec else "created"
    used = {"id", "conversation_id", "messages", "tools", "model", "language", "surface", "source", "created_at", stamp}
    row = {"conversation_id": _conv_id(rec, ("id", "conversation_id"), f"{c.stem}:{c.loc.line or c.loc.record}"),
           "tools": tools, "source": c.source or _str(rec, "source") or c.fmt, "model": _str(rec, "model"),
           "language": _str(rec, "language"), "surface": _str(rec, "surface"),
           "created_at": _timestamp(rec.get(stamp), stamp)}
    return _finish(row, msgs, mmeta, {k: v for k, v in rec.items() if k not in used}, c.lift, c.drop, c.meta)


def _any_flag(v: Any, key: str) -> bool | None:
    """True if any entry of a per-turn moderation list is flagged."""
    if v is None:
        return None
    if not isinstance(v, list):
        raise _Bad("wrong_type", f"{key} is {_tn(v)}, expected an array")
    return any(isinstance(x, dict) and x.get("flagged") is True for x in v)


def _turn_flag(conv: list, key: str) -> bool | None:
    vals = [t.get(key) for t in conv if isinstance(t, dict) and isinstance(t.get(key), bool)]
    return any(vals) if vals else None


def _row_chatlog(rec: Any, c: _Ctx) -> dict:
    """WildChat and LMSYS-Chat-1M: {id, model, conversation: [{role, content, ...}], ...}."""
    if not isinstance(rec, dict):
        raise _Bad("not_an_object", f"record is {_tn(rec)}, expected an object")
    keys = ("conversation_hash", "conversation_id") if c.fmt == "wildchat" else ("conversation_id",)
    cid = _conv_id(rec, keys, None)
    conv = _req(rec, "conversation")
    msgs, mmeta = _messages(conv, c.max_chars)
    lang_v = rec.get("language")
    if lang_v is None:  # fall back to the first user turn's language
        lang_v = next((t.get("language") for t in conv if t.get("role") == "user" and t.get("language")), None)
    lang, lang_name = _language(lang_v)
    redacted = _bool(rec, "redacted")
    row = {"conversation_id": cid, "tools": None, "source": c.source or c.fmt, "model": _str(rec, "model"),
           "language": lang, "language_name": lang_name, "surface": "chat",
           "redacted": redacted if redacted is not None else _turn_flag(conv, "redacted"),
           "moderation_flagged": _any_flag(rec.get("openai_moderation"), "openai_moderation")}
    used = {*keys, "conversation", "model", "language", "redacted"}
    if c.fmt == "wildchat":
        stamps = [t.get("timestamp") for t in conv if t.get("timestamp") is not None]
        toxic = _bool(rec, "toxic")
        row.update(created_at=_timestamp(stamps[0] if stamps else rec.get("timestamp"), "timestamp"),
                   toxic=toxic if toxic is not None else _turn_flag(conv, "toxic"),
                   country=_str(rec, "country"), state=_str(rec, "state"))
        used |= {"timestamp", "toxic", "country", "state"}
    else:
        row["created_at"] = _timestamp(rec.get("timestamp"), "timestamp")
        used.add("timestamp")
    return _finish(row, msgs, mmeta, {k: v for k, v in rec.items() if k not in used}, c.lift, c.drop, c.meta,
                   c.typed, c.typed_turns)


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                  "assistant": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system", "tool": "tool", "observation": "tool", "function_response": "tool",
                  "ipython": "tool", "function_call": "assistant"}


def _row_sharegpt(rec: Any, c: _Ctx) -> dict:
    if not isinstance(rec, dict):
        raise _Bad("not_an_object", f"record is {_tn(rec)}, expected an object with 'conversations'")
    turns = _req(rec, "conversations")
    if not isinstance(turns, list):
        raise _Bad("wrong_type", f"conversations is {_tn(turns)}, expected an array")
    msgs, pending = [], []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise _Bad("wrong_type", f"message {i} is {_tn(t)}, expected an object")
        frm = t.get("from")
        if frm is None:
            raise _Bad("missing_field", f"message {i} has no 'from'")
        if not isinstance(frm, str):
            raise _Bad("wrong_type", f"message {i}: 'from' is {_tn(frm)}, expected a string")
        role = SHAREGPT_ROLES.get(frm.lower())
        if role is None:
            raise _Bad("unknown_role", f"message {i} has unknown 'from' {frm[:40]!r} "
                                       f"(expected human, gpt, system, tool, function_call, observation)")
        if "value" not in t:
            raise _Bad("missing_field", f"message {i} has no 'value'")
        value = t["value"]
        extra = {k: v for k, v in t.items() if k not in ("from", "value")}
        if frm.lower() == "function_call":
            try:
                call = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError as e:
                raise _Bad("bad_tool_call", f"message {i}: function_call value is not JSON ({e.msg})") from None
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise _Bad("bad_tool_call", f"message {i}: function_call value has no 'name'")
            args = call.get("arguments", call.get("parameters", {}))
            cid = f"call_{i}"
            pending.append(cid)
            msgs.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": cid, "type": "function",
                 "function": {"name": call["name"], "arguments": args if isinstance(args, str) else _dumps(args)}}],
                **extra})
        elif role == "tool":
            if not pending:
                raise _Bad("unmatched_tool_message", f"message {i} ({frm}) answers no earlier function_call")
            msgs.append({"role": "tool", "content": value, "tool_call_id": pending.pop(0), **extra})
        else:
            msgs.append({"role": role, "content": value, **extra})
    msgs, mmeta = _messages(msgs, c.max_chars)
    row = {"conversation_id": _conv_id(rec, ("id", "conversation_id"), f"{c.stem}:{c.loc.line or c.loc.record}"),
           "tools": None, "source": c.source or c.fmt, "model": _str(rec, "model"),
           "language": _language(rec.get("language"))[0], "surface": None, "created_at": None}
    used = {"id", "conversation_id", "conversations", "model", "language"}
    return _finish(row, msgs, mmeta, {k: v for k, v in rec.items() if k not in used}, c.lift, c.drop, c.meta)


_HH_MARK = re.compile(r"\n\n(Human|Assistant):")


def _hh_messages(text: Any, which: str) -> list[dict]:
    """Split an HH-RLHF transcript into messages. A repeated speaker marker (``\\n\\nAssistant:``
    inside an assistant turn, which the early models generated) is text of that turn, so roles
    always alternate and no text is lost."""
    if not isinstance(text, str):
        raise _Bad("wrong_type", f"{which} is {_tn(text)}, expected a transcript string")
    parts = _HH_MARK.split(text)
    if parts[0].strip():
        raise _Bad("bad_transcript", f"{which} transcript does not start with '\\n\\nHuman:'")
    raw: list[list[str]] = []
    for speaker, body in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        if raw and raw[-1][0] == role:
            raw[-1][1] += f"\n\n{speaker}:{body}"
        else:
            raw.append([role, body])
    if not raw:
        raise _Bad("empty_conversation", f"{which} transcript has no Human:/Assistant: turns")
    if raw[-1][0] != "assistant":
        raise _Bad("bad_transcript", f"{which} transcript does not end with an Assistant turn")
    return [{"role": r, "content": b.strip()} for r, b in raw]


def _row_hh(rec: Any, c: _Ctx) -> dict:
    if not isinstance(rec, dict):
        raise _Bad("not_an_object", f"record is {_tn(rec)}, expected an object with 'chosen' and 'rejected'")
    chosen = _hh_messages(_req(rec, "chosen"), "chosen")
    msgs, _ = _messages(chosen, c.max_chars)
    rejected = None
    if rec.get("rejected") is not None:
        rej = _hh_messages(rec["rejected"], "rejected")
        if rej[:-1] == chosen[:-1]:
            rejected = rej[-1]["content"]
        else:
            c.warnings["rejected_prefix_differs"] += 1
    row = {"conversation_id": f"{c.stem}:{c.loc.line}", "tools": None, "source": c.source or f"hh_rlhf:{c.stem}",
           "model": None, "language": "en", "surface": None, "created_at": None, "rejected": rejected}
    return _finish(row, msgs)


def _row_canonical(rec: Any, c: _Ctx) -> dict:
    cid = rec.get("conversation_id")
    if cid is None or (isinstance(cid, str) and not cid.strip()):
        raise _Bad("missing_field", "conversation_id is null or empty")
    raw = rec.get("messages")
    if raw is None:
        raise _Bad("missing_field", "messages is null")
    if not isinstance(raw, str):
        raise _Bad("wrong_type", f"messages is {_tn(raw)}, expected a JSON string")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _Bad("invalid_json", f"messages is not valid JSON: {e.msg} at char {e.pos}") from None
    except RecursionError:
        raise _Bad("invalid_json", "messages: JSON nested too deeply") from None
    _messages(parsed, c.max_chars)
    tools = rec.get("tools")
    if tools is not None:
        try:
            tv = json.loads(tools)
        except (json.JSONDecodeError, TypeError):
            raise _Bad("invalid_json", "tools is not valid JSON") from None
        if not isinstance(tv, list):
            raise _Bad("wrong_type", f"tools is {_tn(tv)}, expected a JSON array")
    if rec.get("source") is None and c.source is None:
        raise _Bad("missing_field", "source is null")
    row = dict(rec)
    row["created_at"] = _timestamp(rec.get("created_at"))
    if c.source:
        row["source"] = c.source
    return row


def _prompt_row(kind: str, rec: dict, c: _Ctx, prompt: Any, native_id: Any, **extra) -> dict:
    if not isinstance(prompt, str) or not prompt.strip():
        raise _Bad("empty_prompt", "the prompt is empty")
    if native_id is None or str(native_id).strip() == "":
        raise _Bad("missing_field", "the record has no id")
    msgs, _ = _messages([{"role": "user", "content": prompt}], c.max_chars)
    row = {"conversation_id": f"{kind}:{native_id}", "tools": None, "source": c.source or kind, "model": None,
           "language": "en", "surface": "eval", "created_at": None,
           **{k: (v if v != "" else None) for k, v in extra.items()}}
    return _finish(row, msgs)


def _row_prompt(rec: Any, c: _Ctx) -> dict:
    k, n = c.fmt, c.index + 1  # 1-based data row: the id of rows in sets without their own ids
    if k == "xstest":
        return _prompt_row(k, rec, c, rec["prompt"], rec["id"], category=rec["type"], label=rec["label"],
                           focus=rec.get("focus"), note=rec.get("note"))
    if k == "harmbench":
        behavior, context = rec["Behavior"], rec.get("ContextString", "")
        # HarmBench's own template for contextual behaviours: context, a rule, the request
        prompt = f"{context}\n\n---\n\n{behavior}" if context.strip() else behavior
        return _prompt_row(k, rec, c, prompt, rec["BehaviorID"], category=rec["SemanticCategory"],
                           functional_category=rec.get("FunctionalCategory"), behavior=behavior,
                           context=context, tags=rec.get("Tags"))
    if k == "strongreject":
        return _prompt_row(k, rec, c, rec["forbidden_prompt"], n, category=rec["category"],
                           prompt_source=rec.get("source"))
    if k == "simple_safety_tests":
        prompt = rec["prompts_final"] if "prompts_final" in rec else rec["prompt"]
        return _prompt_row(k, rec, c, prompt, rec.get("id") or n, category=rec["harm_area"],
                           prompt_type=rec.get("category"))
    if k == "advbench":
        if "goal" in rec:  # the original llm-attacks harmful_behaviors.csv
            return _prompt_row(k, rec, c, rec["goal"], n, affirmative_target=rec.get("target"))
        return _prompt_row(k, rec, c, rec["Behavior"], rec.get("BehaviorID") or n, affirmative_target=None)
    if k == "jailbreakbench":
        params, jb = rec
        if not isinstance(jb, dict):
            raise _Bad("not_an_object", f"jailbreak is {_tn(jb)}, expected an object")
        model = params.get("model") if isinstance(params.get("model"), str) else None
        row = _prompt_row(k, jb, c, jb.get("prompt"), f"{model}:{jb.get('index')}", category=_str(jb, "category"),
                          goal=_str(jb, "goal"), behavior=_str(jb, "behavior"), method=params.get("method"),
                          response=_str(jb, "response"), jailbroken=_bool(jb, "jailbroken"),
                          jailbroken_llama_guard1=_bool(jb, "jailbroken_llama_guard1"))
        row["model"] = model  # the model the artifact's prompt was sent to
        return row
    raise AssertionError(k)


#: Required CSV columns per prompt set (alternatives separated by "|").
PROMPT_COLUMNS = {
    "xstest": ("id", "prompt", "type", "label"),
    "harmbench": ("Behavior", "SemanticCategory", "BehaviorID"),
    "strongreject": ("forbidden_prompt", "category"),
    "simple_safety_tests": ("prompts_final|prompt", "harm_area"),
    "advbench": ("goal|Behavior",),
}

_CONVERTERS: dict[str, Callable[[Any, _Ctx], dict]] = {
    "openai_jsonl": _row_openai, "wildchat": _row_chatlog, "lmsys": _row_chatlog, "sharegpt": _row_sharegpt,
    "hh_rlhf": _row_hh, "parquet": _row_canonical, **{k: _row_prompt for k in PROMPT_SETS},
}


# --------------------------------------------------------------------------------------------
# The reading loop


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_Z = (".gz", ".zst", ".zstd")
_EXTS = {"openai_jsonl": (".jsonl", ".ndjson", ".json", *(f".jsonl{z}" for z in _Z), *(f".json{z}" for z in _Z)),
         "hh_rlhf": (".jsonl", *(f".jsonl{z}" for z in _Z)),
         "wildchat": (".parquet", ".jsonl", ".json", *(f".jsonl{z}" for z in _Z), *(f".json{z}" for z in _Z)),
         "lmsys": (".parquet", ".jsonl", ".json", *(f".jsonl{z}" for z in _Z), *(f".json{z}" for z in _Z)),
         "sharegpt": (".json", ".jsonl", ".parquet", *(f".jsonl{z}" for z in _Z), *(f".json{z}" for z in _Z)),
         "parquet": (".parquet",), "jailbreakbench": (".json",)}
#: What each kind reads, for diagnoses ("wrong kind?").
KIND_SHAPES = {
    "openai_jsonl": '{"messages": [{"role", "content"}, ...]} per line',
    "wildchat": '{"conversation_hash", "conversation": [{"role", "content"}, ...]} (WildChat)',
    "lmsys": '{"conversation_id", "conversation": [{"role", "content"}, ...]} (LMSYS-Chat-1M)',
    "sharegpt": '{"id", "conversations": [{"from", "value"}, ...]} (ShareGPT)',
    "hh_rlhf": '{"chosen", "rejected"} transcripts (HH-RLHF)',
    "parquet": "the canonical table (conversation_id, messages, source)",
}
_SHAPE_REASONS = ("missing_field", "not_an_object", "wrong_type", "unknown_role", "empty_conversation",
                  "no_user_turn")


def likely_cause(reasons: Counter | dict[str, int], fmt: str, option: str = "kind:") -> str:
    """Return the likely cause of a read that kept no record, from its most common quarantine
    reason, as a clause to append (": wrong kind? ..."), or "" when there is no better guess.
    ``option``: how the user named the layout (``kind:`` in params, ``--format`` on the CLI)."""
    top = max(reasons, key=reasons.get) if reasons else ""
    if top in _SHAPE_REASONS:
        return f": wrong {option.rstrip(':')}? (`{option} {fmt}` reads {KIND_SHAPES.get(fmt, 'its own layout')})"
    if top == "not_utf8":
        return (": the file is not UTF-8 (Windows-1252 or Latin-1?); re-encode it first, e.g. "
                "`iconv -f cp1252 -t utf-8 IN > OUT`")
    if top in ("wrong_columns", "malformed_csv"):
        return ": CSV rows do not match the header or do not parse (another delimiter, or an unterminated quote?)"
    return ""


#: Bumped when the canonical table a reader writes changes (part of stage 1's cache key).
READER_VERSION = "3"


def _stem(p: Path) -> str:
    name = p.name
    for ext in (".gz", ".zst", ".zstd", ".jsonl", ".json", ".ndjson", ".parquet", ".csv"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return name or p.name


def input_files(path: Any, fmt: str) -> list[Path] | str:
    """The files :func:`read_conversations` would read for ``path`` (a file, every file of the
    format under a folder, extensions in any case, a glob where ``**`` matches any depth, or a
    list of those), in reading order; or ``path`` itself when it is a hub id. Raises
    InputError when nothing matches."""
    return _inputs(path, fmt)


def _inputs(path: Any, fmt: str) -> list[Path] | str:
    """The files to read (a file, every matching file under a folder, a glob, or a list of
    those), or a hub id."""
    if isinstance(path, (list, tuple)):
        if not path:
            raise InputError("no input paths given")
        files: list[Path] = []
        for p in path:
            got = _inputs(p, fmt)
            if isinstance(got, str):
                raise InputError(f"{got}: file not found (a hub id cannot be part of a list of paths)", file=got)
            files += got
        return files
    s = os.fspath(path)
    p = Path(s).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        exts = _EXTS.get(fmt, (".csv",))
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(exts)
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not files:
            raise InputError(f"{s}: no {'/'.join(exts)} files in this folder", file=s)
        return files
    if any(ch in s for ch in "*?["):
        files = sorted(Path(f) for f in _glob.glob(os.path.expanduser(s), recursive=True) if Path(f).is_file())
        if not files:
            raise InputError(f"{s}: no file matches", file=s)
        return files
    if fmt in HUB_FORMATS and _HUB_ID.match(s):
        return s
    hint = " (a Hugging Face hub id works for wildchat, lmsys and sharegpt)" if _HUB_ID.match(s) else ""
    raise InputError(f"{s}: file not found{hint}", file=s)


def _json_doc(path: Path, json_path: str) -> Iterator[tuple[_Loc, Any, Any]]:
    """The records of the array at ``json_path`` (dotted keys) inside one JSON document."""
    name = str(path)
    try:
        with _open_binary(path) as fh:
            doc = json.loads(fh.read().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise _fatal(name, f"the file is not valid UTF-8 ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise _fatal(_Loc(name, e.lineno), f"invalid JSON ({e.msg})") from None
    except (OSError, EOFError, zlib.error) as e:
        raise _fatal(name, f"cannot read the file: {e}") from None
    node = doc
    for key in json_path.split("."):
        if not isinstance(node, dict) or key not in node:
            have = ", ".join(list(node)[:10]) if isinstance(node, dict) else _tn(node)
            raise _fatal(name, f"json_path {json_path!r}: no key {key!r} (has {have})")
        node = node[key]
    if not isinstance(node, list):
        raise _fatal(name, f"json_path {json_path!r} is {_tn(node)}, expected an array of records")
    if not node:
        raise _fatal(name, f"json_path {json_path!r}: empty array (no records)")
    for i, rec in enumerate(node):
        yield _Loc(name, record=i), None, rec


#: Keys of a ``mapping`` (canonical field -> record field): ``prompt``/``response``/``system``
#: build the messages from plain text fields; the others name a field holding that value.
MAPPING_KEYS = ("id", "messages", "prompt", "response", "system", "tools", "model", "language", "surface",
                "source", "created_at")


def _get_path(rec: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(rec, dict):
            return None
        rec = rec.get(key)
    return rec


def _apply_mapping(rec: Any, mapping: dict[str, str]) -> Any:
    """A record of another layout rewritten into the openai_jsonl layout by ``mapping``; the
    fields it does not map stay as they are (so they reach ``meta``)."""
    if not isinstance(rec, dict):
        return rec
    tops = {v.split(".")[0] for v in mapping.values()}
    out = {k: v for k, v in rec.items() if k not in tops}
    for key, field_ in mapping.items():
        if key not in ("prompt", "response", "system"):
            out[key] = _get_path(rec, field_)
    if "prompt" in mapping:
        msgs = []
        if "system" in mapping and _get_path(rec, mapping["system"]) is not None:
            msgs.append({"role": "system", "content": _get_path(rec, mapping["system"])})
        msgs.append({"role": "user", "content": _get_path(rec, mapping["prompt"])})
        if "response" in mapping and _get_path(rec, mapping["response"]) is not None:
            msgs.append({"role": "assistant", "content": _get_path(rec, mapping["response"])})
        out["messages"] = msgs
    return out


_ARRAY_HINT = ("name it .json (a JSON array is read as one) or convert it with: jq -c '.[]' IN.json > OUT.jsonl; "
               "records inside an object ({\"instances\": [...]}) are read with json_path")


def _records(f: Path, fmt: str, max_line_bytes: int, json_path: str | None = None) -> Iterator[tuple[_Loc, Any, Any]]:
    if fmt in PROMPT_SETS:
        return _jbc(f) if fmt == "jailbreakbench" else _csv(f)
    if f.stat().st_size == 0:
        raise _fatal(_Loc(str(f), 1), "empty file (no records)")
    is_parquet = _magic(f) == b"PAR1"
    if not is_parquet:
        _check_encoding(f)
    if json_path:
        if is_parquet:
            raise _fatal(str(f), "json_path applies to JSON documents, not Parquet files")
        return _json_doc(f, json_path)
    if fmt == "parquet":
        if not is_parquet:
            raise _fatal(str(f), "not a Parquet file (format 'parquet' reads the canonical Parquet table; "
                                 "use openai_jsonl, wildchat, ... for other files)")
        return _parquet(f)
    if is_parquet:
        if fmt in ("openai_jsonl", "hh_rlhf"):
            raise _fatal(str(f), f"a Parquet file, but format {fmt!r} reads JSONL; for a canonical "
                                 f"Parquet table use format 'parquet'")
        return _parquet(f)
    low = f.name.lower()
    json_name = ".json" in low and ".jsonl" not in low  # .json, .json.gz, ...: may be an array
    if (fmt in ("wildchat", "lmsys", "sharegpt") or json_name) and _first_char(f) == "[":
        return _json_array(f)
    return _jsonl(f, max_line_bytes, array_hint=_ARRAY_HINT)


# --------------------------------------------------------------------------------------------
# Native ingestion: hub-layout Parquet (WildChat, LMSYS-Chat-1M) flattened and validated in bulk
# by DuckDB. Rows that fail the bulk test (and duplicate ids) go through the per-record path,
# which names the reason; the two paths write the same table.

_PY_LAMBDA = tuple(int("".join(ch for ch in x if ch.isdigit()) or 0)
                   for x in duckdb.__version__.split(".")[:2]) >= (1, 3)


def _lam(var: str, body: str) -> str:
    """A one-argument DuckDB lambda (``lambda x: ...`` from 1.3 on; 2.x rejects ``x -> ...``)."""
    return f"lambda {var}: {body}" if _PY_LAMBDA else f"{var} -> {body}"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _s(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _is_str(t: pa.DataType | None) -> bool:
    return t is not None and (pa.types.is_string(t) or pa.types.is_large_string(t)
                              or (_HAS_VIEW and pa.types.is_string_view(t)))


_HAS_VIEW = hasattr(pa.types, "is_string_view")


def _json_ready(e: str, t: pa.DataType, depth: int = 0) -> str | None:
    """SQL for value ``e`` (Arrow type ``t``) ready for ``to_json`` so that it reads as the
    per-record path writes it: non-finite floats as null, timestamps as ISO 8601 text. None
    for types the bulk path does not handle (binary, maps of such values, ...)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_floating(t):
        return f"(CASE WHEN isfinite({e}) THEN {e} END)"
    if pa.types.is_timestamp(t):
        zone = " || '+00:00'" if t.tz else ""
        return (f"(CASE WHEN microsecond({e}) % 1000000 = 0 THEN strftime({e}, '%Y-%m-%dT%H:%M:%S') "
                f"ELSE strftime({e}, '%Y-%m-%dT%H:%M:%S.%f') END{zone})")
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_map(t) or pa.types.is_union(t) or pa.types.is_time(t) or pa.types.is_duration(t) \
            or pa.types.is_decimal(t):  # decimals: a JSON string per record, a number from DuckDB
        return None
    if pa.types.is_struct(t):
        parts = []
        for f in t:
            inner = _json_ready(f"{e}.{_q(f.name)}", f.type, depth)
            if inner is None:
                return None
            parts.append(f"{_s(f.name)}: {inner}")
        if not parts:
            return None
        if all(p == f"{_s(f.name)}: {e}.{_q(f.name)}" for p, f in zip(parts, t)):
            return e
        return f"(CASE WHEN {e} IS NULL THEN NULL ELSE {{{', '.join(parts)}}} END)"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        v = f"y{depth}"
        inner = _json_ready(v, t.value_type, depth + 1)
        if inner is None:
            return None
        return e if inner == v else f"list_transform({e}, {_lam(v, inner)})"
    return e


def _flag_sql(conv: str, fields: dict, key: str) -> str:
    """SQL twin of :func:`_turn_flag`: any per-turn boolean ``key``, null when none is set."""
    if key not in fields:
        return "CAST(NULL AS BOOLEAN)"
    vals = f"list_filter(list_transform({conv}, {_lam('x', f'x.{_q(key)}')}), {_lam('y', 'y IS NOT NULL')})"
    return f"list_bool_or({vals})"


def _chatlog_used(fmt: str) -> set[str]:
    """The WildChat / LMSYS record fields that become canonical columns (the rest is ``meta``)."""
    used = {"conversation_hash", "conversation_id", "conversation", "model", "language", "redacted", "timestamp"}
    return used | {"toxic", "country", "state"} if fmt == "wildchat" else used - {"conversation_hash"}


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) and not pa.types.is_dictionary(t)


def _typed_fields(sch: pa.Schema, fmt: str, lift: Iterable[str] = (), drop: Iterable[str] = ()) -> dict[str, pa.DataType]:
    """The record fields of a WildChat / LMSYS Parquet schema that the canonical table keeps as
    their own columns with the input's Arrow type rather than as JSON in ``meta``: the nested
    ones (lists and structs: ``openai_moderation``, ``detoxify_moderation``). Writing their
    thousands of scores per conversation as JSON text was most of the conversion time. Returns
    {field name: Arrow type}, in the file's order."""
    if fmt not in ("wildchat", "lmsys"):
        return {}
    skip = _chatlog_used(fmt) | set(lift) | set(drop) | set(CANONICAL_COLUMNS) | {n for n, _ in _EXTRAS[fmt]}
    return {f.name: f.type for f in sch if f.name not in skip and _is_nested(f.type)}


def _turn_type(sch: pa.Schema, fmt: str, drop: Iterable[str] = ()) -> pa.DataType | None:
    """The type of ``message_meta`` for a WildChat / LMSYS Parquet schema: a list of structs of
    the per-turn fields that are not message keys (language, timestamp, turn_identifier, ...),
    with the input's Arrow types; None when the turns have no such field. Encoding these as
    JSON text (with timestamps formatted) cost more than reading them."""
    if fmt not in ("wildchat", "lmsys") or "conversation" not in sch.names:
        return None
    ct = sch.field("conversation").type
    if not (pa.types.is_list(ct) or pa.types.is_large_list(ct)) or not pa.types.is_struct(ct.value_type):
        return None
    fields = _turn_fields(ct.value_type, drop)
    return pa.list_(pa.struct(fields)) if fields else None


def _turn_fields(turn: pa.StructType, drop: Iterable[str] = ()) -> list[pa.Field]:
    """The per-turn fields of a conversation's turn struct that go to ``message_meta``: those
    that are not message keys and not dropped as identifying."""
    drop = set(drop)
    return [x for x in turn if x.name not in MESSAGE_KEYS and x.name not in drop]


def _native_sql(f: Path, sch: pa.Schema, fmt: str, source: str | None, lift: tuple[str, ...],
                drop: frozenset, max_chars: int, keep_meta: bool = True,
                typed: dict[str, pa.DataType] | None = None, typed_turns: bool = False) -> str | None:
    """The bulk query for a hub-layout Parquet file, or None when its schema is not one the bulk
    path reads exactly like the per-record path (then every record takes that path). ``typed``:
    fields selected as they are (see :func:`_typed_fields`), null where the file lacks them;
    ``typed_turns``: ``message_meta`` as the per-turn fields' structs (:func:`_turn_type`), not
    JSON text."""
    names = sch.names
    typ = {n: sch.field(n).type for n in names}
    if "file_row_number" in typ or "conversation" not in typ:
        return None
    keys = ("conversation_hash", "conversation_id") if fmt == "wildchat" else ("conversation_id",)
    ids = [k for k in keys if k in typ]
    if not ids or not all(_is_str(typ[k]) or pa.types.is_integer(typ[k]) for k in ids):
        return None
    ct = typ["conversation"]
    if not (pa.types.is_list(ct) or pa.types.is_large_list(ct)) or not pa.types.is_struct(ct.value_type):
        return None
    turn = {x.name: x.type for x in ct.value_type}
    if not (_is_str(turn.get("role")) and _is_str(turn.get("content"))) \
            or set(turn) & {"name", "tool_calls", "tool_call_id", "refusal"}:
        return None
    for k in ("model", "language", "country", "state"):
        if k in typ and not (_is_str(typ[k]) or pa.types.is_null(typ[k])):
            return None
    for k in ("redacted", "toxic"):
        if k in typ and not (pa.types.is_boolean(typ[k]) or pa.types.is_null(typ[k])):
            return None
        if k in turn and not pa.types.is_boolean(turn[k]):
            return None
    if "timestamp" in typ and not pa.types.is_timestamp(typ["timestamp"]) and not pa.types.is_null(typ["timestamp"]):
        return None
    if "timestamp" in turn and fmt == "wildchat" and not pa.types.is_timestamp(turn["timestamp"]):
        return None
    if "language" in turn and not _is_str(turn["language"]):
        return None
    om = typ.get("openai_moderation")
    if om is not None and not ((pa.types.is_list(om) or pa.types.is_large_list(om))
                               and pa.types.is_struct(om.value_type)
                               and all(x.name != "flagged" or pa.types.is_boolean(x.type) for x in om.value_type)):
        return None

    conv = "conversation"
    cid = "coalesce(" + ", ".join(f"CAST({_q(k)} AS VARCHAR)" for k in ids) + ")" if len(ids) > 1 \
        else f"CAST({_q(ids[0])} AS VARCHAR)"
    role = "CASE WHEN x.role = 'developer' THEN 'system' ELSE x.role END"
    msg = f"{{'role': {role}, 'content': x.content}}"
    cols = {
        "conversation_id": "__id",
        "messages": f"to_json(list_transform({conv}, {_lam('x', msg)}))",
        "tools": "CAST(NULL AS VARCHAR)",
        "source": _s(source or fmt),
        "model": "model" if "model" in typ else "CAST(NULL AS VARCHAR)",
        "language": "__lang",
        "surface": "'chat'",
    }
    is_user_lang = "x.role = 'user' AND x.language IS NOT NULL AND x.language <> ''"
    user_lang = (f"list_filter({conv}, {_lam('x', is_user_lang)})[1].language"
                 if "language" in turn else "CAST(NULL AS VARCHAR)")
    lang = f"coalesce(language, {user_lang})" if "language" in typ else user_lang
    ts_top = "CAST(timestamp AS TIMESTAMP)" if "timestamp" in typ else "CAST(NULL AS TIMESTAMP)"
    if fmt == "wildchat" and "timestamp" in turn:
        first = (f"list_filter(list_transform({conv}, {_lam('x', 'CAST(x.timestamp AS TIMESTAMP)')}), "
                 f"{_lam('y', 'y IS NOT NULL')})[1]")
        cols["created_at"] = f"coalesce({first}, {ts_top})"
    else:
        cols["created_at"] = ts_top
    cols["language_name"] = "__lang"
    top = lambda k: k if k in typ else f"CAST(NULL AS {'BOOLEAN' if k in ('redacted', 'toxic') else 'VARCHAR'})"
    cols["redacted"] = f"coalesce({top('redacted')}, {_flag_sql(conv, turn, 'redacted')})"
    if fmt == "wildchat":
        cols["toxic"] = f"coalesce({top('toxic')}, {_flag_sql(conv, turn, 'toxic')})"
    if om is None:
        cols["moderation_flagged"] = "CAST(NULL AS BOOLEAN)"
    else:
        flag = "coalesce(x.flagged, false)" if "flagged" in {x.name for x in om.value_type} else "false"
        cols["moderation_flagged"] = (f"CASE WHEN openai_moderation IS NULL THEN NULL ELSE coalesce(list_bool_or("
                                      f"list_transform(openai_moderation, {_lam('x', flag)})), false) END")
    if fmt == "wildchat":
        for k in ("country", "state"):
            if k not in drop:
                cols[k] = top(k)
    extra = [x.name for x in _turn_fields(ct.value_type, drop)]
    if extra and typed_turns:
        parts = ", ".join(f"{_s(k)}: x.{_q(k)}" for k in extra)
        cols["message_meta"] = f"list_transform({conv}, {_lam('x', '{' + parts + '}')})"
    elif extra:
        parts = []
        for k in extra:
            inner = _json_ready(f"x.{_q(k)}", turn[k], 1)
            if inner is None:
                return None
            parts.append(f"{_s(k)}: {inner}")
        cols["message_meta"] = f"to_json(list_transform({conv}, {_lam('x', '{' + ', '.join(parts) + '}')}))"
    else:
        cols["message_meta"] = "CAST(NULL AS VARCHAR)"
    used = _chatlog_used(fmt)
    typed = dict(typed or {}) if keep_meta else {}
    rest = [k for k in names if k not in used and k not in lift and k not in drop and k not in typed] \
        if keep_meta else []
    for k in typed:
        cols[k] = _q(k) if k in typ else "NULL"
    parts = []
    for k in rest:
        inner = _json_ready(_q(k), typ[k], 1)
        if inner is None:
            return None
        parts.append(f"{_s(k)}: {inner}")
    if keep_meta:
        cols["meta"] = f"to_json({{{', '.join(parts)}}})" if parts else "CAST(NULL AS VARCHAR)"
    for k in lift:
        if k not in typ:
            cols[k] = "CAST(NULL AS VARCHAR)"
        elif _is_str(typ[k]):
            cols[k] = _q(k)
        else:
            inner = _json_ready(_q(k), typ[k], 1)
            if inner is None:
                return None
            cols[k] = f"CAST(to_json({inner}) AS VARCHAR)"
    is_user = "x.role = 'user'"
    content_ok = (f"x IS NOT NULL AND x.role IN ('system', 'user', 'assistant', 'developer') "
                  f"AND x.content IS NOT NULL AND length(x.content) <= {int(max_chars)}")
    ok = (f"__id IS NOT NULL AND NOT regexp_full_match(__id, '\\s*') AND {conv} IS NOT NULL "
          f"AND len({conv}) > 0 AND list_bool_and(list_transform({conv}, {_lam('x', content_ok)})) "
          f"AND list_bool_or(list_transform({conv}, {_lam('x', is_user)}))")
    select = ", ".join(f"{expr} AS {_q(name)}" for name, expr in cols.items())
    return (f"SELECT {select}, coalesce({ok}, false) AS __ok, file_row_number AS __i FROM ("
            f"SELECT *, {cid} AS __id, {lang} AS __lang FROM read_parquet({_s(str(f))}, file_row_number = true))")


# Native ingestion of OpenAI-messages and ShareGPT JSONL: lines are parsed in chunks by Arrow's
# JSON reader against an explicit schema, then flattened and tested by DuckDB. A chunk whose
# records carry any field outside that schema (which would go to ``meta``/``message_meta``),
# or that Arrow cannot parse, and each line with a control byte, takes the per-record path, as
# do the rows that fail the test; so both paths give the same table and the same quarantine.

_MSG = pa.list_(pa.struct([("role", _S), ("content", _S)]))
_BULK_JSONL: dict[str, pa.Schema] = {
    "openai_jsonl": pa.schema([("id", _S), ("conversation_id", _S), ("messages", _MSG), ("model", _S),
                               ("language", _S), ("surface", _S), ("source", _S), ("created_at", _S)]),
    "sharegpt": pa.schema([("id", _S), ("conversation_id", _S),
                           ("conversations", pa.list_(pa.struct([("from", _S), ("value", _S)]))),
                           ("model", _S), ("language", _S)]),
}
_CTRL_RE = re.compile(rb"[\x00-\x1f]")  # raw control bytes: JSON errors (or whitespace) json.loads reads its own way


def _jsonl_sql(fmt: str, source: str | None, stem: str, max_chars: int) -> str:
    """The bulk query over an Arrow chunk ``__t`` (the schema of :data:`_BULK_JSONL` plus
    ``__i``, the line number) of openai_jsonl or sharegpt records."""
    if fmt == "openai_jsonl":
        conv, role = "messages", "CASE WHEN x.role = 'developer' THEN 'system' ELSE x.role END"
        content, known = "x.content", "x.role IN ('system', 'user', 'assistant', 'developer')"
        src = _s(source) if source else f"coalesce(nullif(source, ''), {_s(fmt)})"
        cols = {"model": "model", "language": "language", "surface": "surface"}
    else:
        conv = "conversations"
        role = "CASE lower(x.\"from\") " + " ".join(
            f"WHEN {_s(k)} THEN {_s(v)}" for k, v in SHAREGPT_ROLES.items()
            if v in ("system", "user", "assistant") and k != "function_call") + " END"
        content, known = "x.value", f"({role}) IS NOT NULL"
        src = _s(source or fmt)
        cols = {"model": "model", "language": "language", "surface": "CAST(NULL AS VARCHAR)"}
    msg = f"{{'role': {role}, 'content': {content}}}"
    item_ok = (f"x IS NOT NULL AND {known} AND {content} IS NOT NULL "
               f"AND length({content}) <= {int(max_chars)}")
    is_user = f"({role}) = 'user'"
    created = "created_at IS NULL AND " if fmt == "openai_jsonl" else ""
    ok = (f"{created}regexp_matches(__id, '[!-~]') AND {conv} IS NOT NULL AND len({conv}) > 0 "
          f"AND list_bool_and(list_transform({conv}, {_lam('x', item_ok)})) "
          f"AND list_bool_or(list_transform({conv}, {_lam('x', is_user)}))")
    select = {
        "conversation_id": "__id",
        "messages": f"to_json(list_transform({conv}, {_lam('x', msg)}))",
        "tools": "CAST(NULL AS VARCHAR)",
        "source": src,
        **cols,
        "created_at": "CAST(NULL AS TIMESTAMP)",
        "message_meta": "CAST(NULL AS VARCHAR)",
        "meta": "CAST(NULL AS VARCHAR)",
        "language_name": "language",
    }
    body = ", ".join(f"{e} AS {_q(n)}" for n, e in select.items())
    return (f"SELECT {body}, coalesce({ok}, false) AS __ok, __i FROM (SELECT *, coalesce(id, conversation_id, "
            f"{_s(stem + ':')} || CAST(__i AS VARCHAR)) AS __id FROM __t)")


def _arrow_json(lines: list[bytes], schema: pa.Schema, n: int | None = None) -> pa.Table | None:
    """Parse JSON lines (``n`` of them, default ``len(lines)``) with Arrow against ``schema``:
    the table, or None when a line is not valid JSON in that schema (or UTF-8), holds a field
    outside it, or is not exactly one object."""
    buf = lines[0] if len(lines) == 1 else b"\n".join(lines)
    n = len(lines) if n is None else n
    try:
        t = pj.read_json(io.BytesIO(buf),
                         read_options=pj.ReadOptions(block_size=max(1 << 20, min(len(buf) + 1, (1 << 31) - 1))),
                         parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"))
        if t.num_rows != n or not t.schema.equals(schema):
            return None
        t.validate(full=True)  # Arrow's JSON reader does not check UTF-8; this does
    except (pa.ArrowException, ValueError):
        return None
    return t


def _arrow_json_parts(lines: list[bytes], schema: pa.Schema,
                      whole_failed: bool = False) -> tuple[pa.Table | None, list[int]]:
    """Parse what :func:`_arrow_json` can of ``lines``, halving the parts it cannot (at most 64
    parses, so a few odd records are isolated and a chunk of odd records costs little). Returns (table, the indices of the
    lines it holds, ascending); the other lines take the per-record path."""
    parts: list[tuple[int, int, pa.Table]] = []
    calls, limit = 0, 64

    def go(lo: int, hi: int) -> None:
        nonlocal calls
        calls += 1
        t = _arrow_json(lines[lo:hi], schema)
        if t is not None:
            parts.append((lo, hi, t))
        elif hi - lo > 1 and calls < limit:
            mid = (lo + hi) // 2
            go(lo, mid)
            go(mid, hi)

    if lines:
        whole = None if whole_failed else _arrow_json(lines, schema)
        if whole is not None:
            return whole, list(range(len(lines)))
        # a first or last line that fails alone: most likely every record has that field (not a
        # few odd records), so the chunk takes the per-record path without halving
        if len(lines) > 2 and _arrow_json(lines[:1], schema) is not None \
                and _arrow_json(lines[-1:], schema) is not None:
            calls = 3
            mid = len(lines) // 2
            go(0, mid)
            go(mid, len(lines))
    idx = [i for lo, hi, _ in parts for i in range(lo, hi)]
    return (pa.concat_tables([t for _, _, t in parts]) if parts else None), idx


class _Run:
    """One read: records -> validated rows in chunks (pyarrow tables), bad records -> quarantine."""

    def __init__(self, path, fmt: str, *, quarantine, max_message_chars: int, source: str | None,
                 chunk_rows: int, max_line_bytes: int | None, columns: Iterable[str] = (),
                 keep_identifying: bool = False, quarantine_raw: bool = False, progress: bool | None = None,
                 memory_limit: str | None = None, threads: int | None = None, json_path: str | None = None,
                 keep_meta: bool = True, mapping: dict[str, str] | None = None, spill_dir: str | None = None):
        if fmt not in _CONVERTERS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS + PROMPT_SETS)}")
        self.lift = tuple(columns)
        if self.lift:
            if "meta" not in dict(_EXTRAS.get(fmt, [])):
                raise ValueError(f"columns= applies to formats with a `meta` column "
                                 f"(openai_jsonl, wildchat, lmsys, sharegpt), not {fmt!r}")
            taken = set(CANONICAL_COLUMNS) | {n for n, _ in _EXTRAS[fmt]}
            clash = [c for c in self.lift if c in taken or not isinstance(c, str)]
            if clash or len(set(self.lift)) != len(self.lift):
                raise ValueError(f"columns= names must be new, distinct column names; not {clash or self.lift}")
        if memory_limit is not None and not re.fullmatch(MEMORY_LIMIT_PATTERN, str(memory_limit)):
            raise ValueError(f"memory limit {memory_limit!r} is not a size such as 4GB or 512MiB")
        self.fmt, self.source, self.chunk_rows = fmt, source, chunk_rows
        self.max_chars = int(max_message_chars)
        self.max_line_bytes = max_line_bytes or max(DEFAULT_MAX_LINE_BYTES, 4 * self.max_chars + (1 << 20))
        self.inputs = _inputs(path, fmt)
        self.quarantine = Path(quarantine) if quarantine is not None else None
        if self.quarantine is not None:
            refuse_overwrite(self.inputs, self.quarantine, "the quarantine file")
        self.drop = frozenset() if keep_identifying else IDENTIFYING_FIELDS
        self.keep_meta, self.spill_dir = keep_meta, spill_dir
        self.mapping = dict(mapping or {})
        if self.mapping:
            if fmt != "openai_jsonl":
                raise ValueError(f"mapping= applies to openai_jsonl, not {fmt!r}")
            unknown = [k for k in self.mapping if k not in MAPPING_KEYS]
            if unknown:
                raise ValueError(f"mapping keys must be among {', '.join(MAPPING_KEYS)}; not {unknown}")
        self.quarantine_raw, self.progress = quarantine_raw, progress
        self.memory_limit, self.threads, self.json_path = memory_limit, threads, json_path
        # WildChat / LMSYS Parquet: nested record fields (moderation records) as typed columns,
        # their type from the first file; only when every input is Parquet, so one schema fits all
        # and the per-turn fields as a typed message_meta
        self.typed: dict[str, pa.DataType] = {}
        self.turn_type: pa.DataType | None = None
        if fmt in ("wildchat", "lmsys") and not isinstance(self.inputs, str) and self.inputs \
                and all(f.stat().st_size > 0 and _magic(f) == b"PAR1" for f in self.inputs):
            first = _parquet_file(self.inputs[0]).schema_arrow
            self.turn_type = _turn_type(first, fmt, self.drop)
            if keep_meta:
                self.typed = _typed_fields(first, fmt, self.lift, self.drop)
        self.schema: pa.Schema | None = (None if fmt == "parquet" else pa.schema(
            [(n, self.turn_type if n == "message_meta" and self.turn_type is not None else t)
             for n, t in _BASE + _EXTRAS[fmt] if n not in self.drop and (keep_meta or n != "meta")]
            + [(c, _S) for c in self.lift] + list(self.typed.items())))
        self.seen: dict[str, tuple[int, str | int]] = {}  # id -> (file, "line n"/"record i", or i)
        self.mapped: Counter = Counter()  # mapping key -> records that have its field
        self.fields: set[str] = set()     # the records' top-level fields (for a misspelt mapping)
        self.rows: list[dict] = []
        self.records = self.kept = self.quarantined = 0
        self.reasons: Counter = Counter()
        self.warnings: Counter = Counter()
        self._qfh = None
        self._qtmp: Path | None = None
        self._files: list[str] = []

    # -- quarantine file
    def _open_quarantine(self) -> None:
        if self.quarantine is not None:
            self.quarantine.parent.mkdir(parents=True, exist_ok=True)
            self._qtmp = self.quarantine.with_name(f".{self.quarantine.name}.tmp{os.getpid()}")
            self._qfh = open(self._qtmp, "w", encoding="utf-8")

    def _close_quarantine(self, ok: bool) -> None:
        if self._qfh is not None:
            self._qfh.close()
            self._qfh = None
            if ok:
                os.replace(self._qtmp, self.quarantine)
            else:
                self._qtmp.unlink(missing_ok=True)

    def _bad(self, loc: _Loc, raw: Any, bad: _Bad) -> None:
        self.records += 1
        if self._qfh is None:
            raise InputError(f"{loc}: {bad.detail}", file=loc.file, line=loc.line, record=loc.record,
                             reason=bad.reason, kept_before=self.kept)
        self.quarantined += 1
        self.reasons[bad.reason] += 1
        # the raw record may hold personal data: kept only when asked (quarantine_raw=True), and
        # without it the message does not quote long field values either
        detail = bad.detail if self.quarantine_raw else _QUOTED.sub(_elide, bad.detail)
        self._qfh.write(json.dumps({"file": loc.file, "line": loc.line, "record": loc.record, "reason": bad.reason,
                                    "message": f"{loc}: {detail}",
                                    "raw": _raw_text(raw) if self.quarantine_raw else None},
                                   ensure_ascii=False) + "\n")

    def _accept(self, loc: _Loc, raw: Any, row: dict, fi: int) -> bool:
        """Check a converted row (unique id, valid Unicode) and count it; False if it went bad."""
        cid = row["conversation_id"]
        if not isinstance(cid, str):
            cid = row["conversation_id"] = str(cid)
        first = self.seen.get(cid)
        if first is not None:
            at = first[1] if isinstance(first[1], str) else f"record {first[1]}"  # bulk path: an index
            where = at if first[0] == fi else f"{self._files[first[0]]} {at}"
            self._bad(loc, raw, _Bad("duplicate_id", f"duplicate conversation id {cid[:80]!r} "
                                                     f"(first seen at {where})"))
            return False
        for k, v in row.items():
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    self._bad(loc, raw, _Bad("invalid_unicode", f"{k} contains an unpaired surrogate "
                                                                f"(a lone \\ud800-\\udfff escape)"))
                    return False
        self.seen[cid] = (fi, loc.short())
        self.records += 1
        self.kept += 1
        return True

    def _good(self, loc: _Loc, raw: Any, row: dict, fi: int) -> pa.Table | None:
        if not self._accept(loc, raw, row, fi):
            return None
        self.rows.append(row)
        return self._flush() if len(self.rows) >= self.chunk_rows else None

    def _convert_one(self, loc: _Loc, raw: Any, obj: Any, stem: str, index: int) -> dict | None:
        """One record through its format's converter: the row, or None once it is quarantined."""
        if isinstance(obj, _Bad):
            self._bad(loc, raw, obj)
            return None
        if self.mapping:
            if isinstance(obj, dict):
                self.mapped.update(k for k, f in self.mapping.items() if _get_path(obj, f) is not None)
                self.fields.update(obj)
            obj = _apply_mapping(obj, self.mapping)
        ctx = _Ctx(self.fmt, stem, loc, self.max_chars, self.source, self.warnings, index, self.lift,
                   self.drop, self.keep_meta, tuple(self.typed), self.turn_type is not None)
        try:
            return _CONVERTERS[self.fmt](obj, ctx)
        except _Bad as b:
            self._bad(loc, raw if raw is not None else obj, b)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            self._bad(loc, raw if raw is not None else obj,
                      _Bad("invalid_record", f"cannot read the record ({type(e).__name__}: {e})"))
        return None

    def _flush(self) -> pa.Table:
        names = self.schema.names
        rows = [{k: r.get(k) for k in names} for r in self.rows]
        self.rows = []
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _parquet_schema(self, f: Path) -> pa.Schema:
        """Output schema for a canonical Parquet input: canonical columns first, then its extras."""
        sch = _parquet_file(f).schema_arrow
        missing = [c for c in ("conversation_id", "messages") if c not in sch.names]
        if "source" not in sch.names and self.source is None:
            missing.append("source")
        if missing:
            raise _fatal(str(f), f"missing column(s) {', '.join(missing)} (has {', '.join(sch.names)})")
        for c in ("conversation_id", "messages", "tools", "source", "model", "language", "surface"):
            if c in sch.names:
                t = sch.field(c).type
                if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
                    raise _fatal(str(f), f"column {c} has type {t}, expected string")
        if "created_at" in sch.names:
            t = sch.field("created_at").type
            if not (pa.types.is_timestamp(t) or pa.types.is_string(t) or pa.types.is_null(t)
                    or pa.types.is_large_string(t)):
                raise _fatal(str(f), f"column created_at has type {t}, expected a timestamp")
        extras = [sch.field(n) for n in sch.names if n not in CANONICAL_COLUMNS]
        return pa.schema(_BASE + [(x.name, x.type) for x in extras])

    def chunks(self) -> Iterator[pa.Table]:
        """Yield the canonical table in chunks; raise InputError on the first bad record unless
        quarantining."""
        ok = False
        self._open_quarantine()
        try:
            if isinstance(self.inputs, str):
                sources: Iterable = [(self.inputs, _hub(self.inputs, self.fmt), self.inputs.split("/")[-1])]
            else:
                sources = ((str(f), f, _stem(f)) for f in self.inputs)
            self._bar = tqdm(total=self._total_rows(), unit=" conversations", unit_scale=True, mininterval=1.0,
                             desc=f"reading {self.fmt}", disable=None if self.progress is None else not self.progress)
            for fi, (name, src, stem) in enumerate(sources):
                self._files.append(name)
                if isinstance(src, Path):
                    if self.fmt in ("wildchat", "lmsys") and not (self.mapping or self.json_path):
                        _check_layout(src, self.fmt)
                    if self.fmt in PROMPT_SETS and self.fmt != "jailbreakbench":
                        self._check_csv(src)
                    if self.fmt == "parquet":
                        sch = self._parquet_schema(src)
                        if self.schema is None:
                            self.schema = sch
                        elif sch != self.schema:
                            raise _fatal(name, "columns differ from the first file's")
                    sql = self._native_plan(src)
                    if sql is not None:
                        if self.rows:
                            yield self._flush()
                        yield from self._native(src, fi, sql, stem)
                        continue
                    sql = self._jsonl_plan(src)
                    if sql is not None:
                        if self.rows:
                            yield self._flush()
                        yield from self._native_jsonl(src, fi, sql, stem)
                        continue
                    src = _records(src, self.fmt, self.max_line_bytes, self.json_path)
                for index, (loc, raw, obj) in enumerate(src):
                    self._bar.update(1)
                    row = self._convert_one(loc, raw, obj, stem, index)
                    if row is None:
                        continue
                    t = self._good(loc, raw if raw is not None else obj, row, fi)
                    if t is not None:
                        yield t
            if self.rows or self.kept == 0:
                yield self._flush()
            self._check_mapping()
            ok = True
        finally:
            self._bar.close()
            self._close_quarantine(ok)

    def _check_mapping(self) -> None:
        """Raise InputError when a mapped field is in no record (misspelt?): a ``response``
        mapped to nothing would silently leave every conversation without an answer."""
        absent = [k for k in self.mapping if self.records and not self.mapped[k]]
        if absent:
            field_list = ", ".join(sorted(self.fields)[:20]) or "none"
            raise InputError(", ".join(self._files) + ": mapping " + ", ".join(f"{k}={self.mapping[k]}" for k in absent)
                             + f": no record has this field (misspelt?); the records' fields: {field_list}",
                             file=", ".join(self._files))

    def _total_rows(self) -> int | None:
        """Records to read, where the files say (Parquet metadata); None otherwise."""
        if isinstance(self.inputs, str) or not all(_magic(f) == b"PAR1" for f in self.inputs):
            return None
        try:
            return sum(pq.read_metadata(f).num_rows for f in self.inputs)
        except (pa.ArrowException, OSError):
            return None

    def _native_plan(self, f: Path) -> str | None:
        """The bulk query for a hub-layout Parquet file of WildChat or LMSYS, or None."""
        if self.fmt not in ("wildchat", "lmsys") or f.stat().st_size == 0 or _magic(f) != b"PAR1":
            return None
        pf = _parquet_file(f)
        if pf.metadata.num_rows == 0:
            raise _fatal(str(f), "empty Parquet file (no records)")
        sch = pf.schema_arrow
        for k, t in self.typed.items():
            if k in sch.names and sch.field(k).type != t:
                raise _fatal(str(f), f"field {k} has type {sch.field(k).type}, but {t} in {self.inputs[0]}; "
                                     f"convert these files separately (or with keep_meta=False)")
        turns = _turn_type(sch, self.fmt, self.drop)
        if self.turn_type is not None and turns != self.turn_type:  # None: JSON text for every file
            raise _fatal(str(f), f"the conversation turns' fields differ from those in {self.inputs[0]} "
                                 f"({turns} against {self.turn_type}); convert these files separately")
        return _native_sql(f, sch, self.fmt, self.source, self.lift, self.drop, self.max_chars,
                           self.keep_meta, self.typed, self.turn_type is not None)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        config = {"preserve_insertion_order": True}
        if self.threads:
            config["threads"] = int(self.threads)
        if self.memory_limit:
            config["memory_limit"] = self.memory_limit
        if self.spill_dir:
            os.makedirs(self.spill_dir, exist_ok=True)
            config["temp_directory"] = str(self.spill_dir)
        con = duckdb.connect(config=config)
        con.execute("SET enable_progress_bar = false")
        con.execute("SET TimeZone = 'UTC'")
        return con

    def _native(self, f: Path, fi: int, sql: str, stem: str) -> Iterator[pa.Table]:
        """Bulk conversion of one hub-layout Parquet file: DuckDB flattens and tests every
        record; the ones that fail (and duplicate ids) take the per-record path, which
        quarantines them with their reason or keeps them. Yields tables in file order."""
        name = str(f)
        langs: dict[str | None, tuple[str | None, str | None]] = {None: (None, None)}
        con = self._connect()
        pf = None

        def slow(rows: list[int]) -> Iterator[tuple[_Loc, Any, Any]]:
            nonlocal pf
            pf = pf or _parquet_file(f)
            for i, rec in zip(rows, _parquet_rows(pf, rows)):
                yield _Loc(name, record=i), None, rec

        try:
            res = con.sql(sql)
            batches = max(self.chunk_rows, 1)
            # DuckDB 2.x: to_arrow_reader; 1.x: fetch_record_batch
            reader = (res.to_arrow_reader(batches) if hasattr(res, "to_arrow_reader")
                      else res.fetch_record_batch(batches))
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                except duckdb.Error as e:
                    raise _fatal(name, f"cannot read the Parquet file ({_one_line(e)})") from None
                t = pa.Table.from_batches([batch])
                self._bar.update(t.num_rows)
                yield self._merge(t, fi, stem, langs, slow)
        finally:
            con.close()

    def _jsonl_plan(self, f: Path) -> str | None:
        """The bulk query for an openai_jsonl / sharegpt JSONL file, or None (per-record path)."""
        if self.fmt not in _BULK_JSONL or self.mapping or self.json_path or self.lift \
                or f.stat().st_size == 0 or _magic(f) == b"PAR1":
            return None
        _check_encoding(f)
        try:
            if _first_char(f) != "{":
                return None
        except InputError:
            return None  # the per-record path says where the file breaks
        return _jsonl_sql(self.fmt, self.source, _stem(f), self.max_chars)

    def _native_jsonl(self, f: Path, fi: int, sql: str, stem: str) -> Iterator[pa.Table]:
        """Bulk conversion of one JSONL file, ``chunk_rows`` lines at a time (see
        :data:`_BULK_JSONL`). Yields tables in line order."""
        name, schema = str(f), _BULK_JSONL[self.fmt]
        langs: dict[str | None, tuple[str | None, str | None]] = {None: (None, None)}
        empty = pa.table({**{n: pa.array([], schema.field(n).type) for n in schema.names},
                          "__i": pa.array([], pa.int64())})
        con = self._connect()
        seen = False
        bulk = [0, 0]  # lines the bulk path kept, lines tried: once half of them fail, stop trying

        def chunk(items: list[tuple[_Loc, bytes, int]], whole_failed: bool = False) -> pa.Table:
            by_line = {loc.line: (loc, raw, long) for loc, raw, long in items}
            tried = 2 * bulk[0] >= bulk[1]  # after a chunk of odd records: no more halving
            clean = [(loc.line, raw.rstrip(b"\r\n")) for loc, raw, long in items if not long and tried]
            # only lines that are one object: Arrow's reader crashes on a block that starts with null
            clean = [(i, b) for i, b in clean if b.strip()[:1] == b"{" and b.strip()[-1:] == b"}"
                     and not _CTRL_RE.search(b)]
            t, got = _arrow_json_parts([b for _, b in clean], schema, whole_failed and len(clean) == len(items))
            clean = [clean[j] for j in got]
            if t is None:
                t = empty
            else:
                t = t.append_column("__i", pa.array([i for i, _ in clean], pa.int64()))
            taken = {i for i, _ in clean}
            extra = [_jsonl_record(*by_line[i], self.max_line_bytes, False, _ARRAY_HINT)
                     for i in by_line if i not in taken]
            con.register("__t", t)
            try:
                out = con.sql(sql).to_arrow_table()
            finally:
                con.unregister("__t")
            if tried:
                bulk[0] += int(pc.sum(out.column("__ok")).as_py() or 0)
                bulk[1] += len(items)

            def slow(rows: list[int]) -> Iterator[tuple[_Loc, Any, Any]]:
                for i in rows:
                    yield _jsonl_record(*by_line[i], self.max_line_bytes, False, _ARRAY_HINT)
            self._bar.update(len(items))
            return self._merge(out, fi, stem, langs, slow, extra, lines=True)

        def block(first: int, body: bytes, nl: bool) -> pa.Table | bool | None:
            """A block whose every line is one JSON object of the schema, in bulk; else None, or
            False when Arrow could not read the block as a whole."""
            arr = np.frombuffer(body, np.uint8)
            nls = np.flatnonzero(arr == 10)
            n = len(nls)
            if not (body[:1] == b"{" and body[-1:] == b"}" and int(np.count_nonzero(arr < 32)) == n
                    and bool((arr[nls + 1] == 123).all()) and bool((arr[nls - 1] == 125).all())):
                return None  # a blank line, a control byte, a line that does not start with { and end with }
            t = _arrow_json([body], schema, n + 1)
            if t is None:
                return False
            con.register("__t", t.append_column("__i", pa.array(range(first, first + n + 1), pa.int64())))
            try:
                out = con.sql(sql).to_arrow_table()
            finally:
                con.unregister("__t")
            bulk[0] += int(pc.sum(out.column("__ok")).as_py() or 0)
            bulk[1] += n + 1
            self._bar.update(n + 1)
            starts = [0, *(nls + 1).tolist(), len(body) + 1]

            def slow(rows: list[int]) -> Iterator[tuple[_Loc, Any, Any]]:
                for i in rows:
                    a, b = starts[i - first], starts[i - first + 1]
                    raw = body[a:b - 1] + (b"\n" if nl or i - first < n else b"")
                    yield _jsonl_record(_Loc(name, i), raw, 0, self.max_line_bytes, False, _ARRAY_HINT)
            return self._merge(out, fi, stem, langs, slow, lines=True)

        resume = None
        try:
            for first, piece, long in _jsonl_blocks(f, self.max_line_bytes, max(self.chunk_rows, 1)):
                if 2 * bulk[0] < bulk[1]:  # most records so far needed the per-record path
                    resume = first
                    break
                if long:
                    yield chunk([(_Loc(name, first), piece, long)])
                    continue
                nl = piece.endswith(b"\n")
                body = piece[:-1] if nl else piece
                t = block(first, body, nl)
                if isinstance(t, pa.Table):
                    seen = True
                    yield t
                    continue
                lines = body.split(b"\n")
                items = [(_Loc(name, first + j), raw + b"\n" if nl or j < len(lines) - 1 else raw, 0)
                         for j, raw in enumerate(lines) if raw.strip()]
                if items:
                    seen = True
                    yield chunk(items, whole_failed=t is False)
        finally:
            con.close()
        if resume is not None:  # the rest of the file by the per-record path
            for loc, raw, long in _jsonl_lines(f, self.max_line_bytes):
                if loc.line < resume or (not long and not raw.strip()):
                    continue
                seen = seen or not long
                loc, raw, obj = _jsonl_record(loc, raw, long, self.max_line_bytes, False, _ARRAY_HINT)
                self._bar.update(1)
                row = self._convert_one(loc, raw, obj, stem, 0)
                if row is not None and (t := self._good(loc, raw, row, fi)) is not None:
                    yield t
            if self.rows:
                yield self._flush()
        if not seen:
            raise _fatal(_Loc(name, 1), "empty file (no records)")

    def _merge(self, t: pa.Table, fi: int, stem: str, langs: dict, slow: Callable[[list[int]], Iterable],
               extra: Iterable[tuple[_Loc, Any, Any]] = (), lines: bool = False) -> pa.Table:
        """One bulk-converted batch (output columns, ``language_name`` with the raw language,
        ``__ok``, ``__i``: record index or line) in canonical form: the rows that passed and whose
        id is new are kept; the others, fetched by ``slow(indices)`` as (location, raw,
        record), and the records of ``extra`` take the per-record path. Rows in ``__i`` order
        (``lines``: ``__i`` is a line number, else a record index)."""
        out_names = self.schema.names
        idx = t.column("__i").to_pylist()
        good = t.column("__ok").to_pylist()
        ids = t.column("conversation_id").to_pylist()
        fresh = set(ids)
        if all(good) and len(fresh) == len(ids) and fresh.isdisjoint(self.seen):
            # the usual batch: every record passed, no id seen before (checked as sets)
            self.seen.update(zip(ids, ((fi, f"line {i}") for i in idx) if lines else ((fi, i) for i in idx)))
            keep, bad = None, []
        else:
            keep, bad = [], []
            for i, cid, g in zip(idx, ids, good):
                if g and cid not in self.seen:
                    self.seen[cid] = (fi, f"line {i}" if lines else i)
                    keep.append(True)
                else:
                    keep.append(False)
                    bad.append(i)
        n_kept = len(idx) - len(bad)
        self.records += n_kept
        self.kept += n_kept
        if self.fmt in ("wildchat", "lmsys", "sharegpt"):  # language names to codes, as _language does
            raw = t.column("language_name")
            names = pc.unique(raw).to_pylist()
            for v in names:
                if v not in langs:
                    langs[v] = _language(v)
            codes = pa.array([langs[v][0] for v in names], pa.string())
            t = t.set_column(t.schema.get_field_index("language"), "language",
                             pc.take(codes, pc.index_in(raw, pa.array(names, raw.type))))
        if keep is not None:
            t = t.filter(pa.array(keep, pa.bool_()))
        t = t.select([*out_names, "__i"])
        tables = [t.cast(pa.schema([*self.schema, ("__i", pa.int64())]))]
        rows = []
        per_record = [*(slow(bad) if bad else ()), *extra]
        per_record.sort(key=lambda x: x[0].line if x[0].line is not None else x[0].record)  # quarantine in file order
        for loc, raw, rec in per_record:
            i = loc.line if loc.line is not None else loc.record
            row = self._convert_one(loc, raw, rec, stem, i if loc.line is None else 0)
            if row is not None and self._accept(loc, raw if raw is not None else rec, row, fi):
                rows.append({**{k: row.get(k) for k in out_names}, "__i": i})
        if rows:
            tables.append(pa.Table.from_pylist(rows, schema=tables[0].schema))
            t = pa.concat_tables(tables)
            t = t.take(pc.sort_indices(t.column("__i")))
        else:
            t = tables[0]
        return t.drop_columns(["__i"])

    def _check_csv(self, f: Path) -> None:
        header = _csv_header(f)
        need = PROMPT_COLUMNS[self.fmt]
        missing = [c for c in need if not any(a in header for a in c.split("|"))]
        if missing:
            raise _fatal(_Loc(str(f), 1), f"missing column(s) {', '.join(missing)} for {self.fmt} "
                                          f"(has {', '.join(header) or 'none'})")

    def _absent_columns(self, table: pd.DataFrame | None, path: Path | None) -> list[str]:
        """The lifted columns (``columns=``) that are null in every kept row."""
        if not self.lift or not self.kept:
            return []
        if table is not None:
            return [c for c in self.lift if c in table and table[c].isna().all()]
        if path is None:
            return []
        md = pq.ParquetFile(path).metadata
        names = [md.schema.column(j).name for j in range(md.num_columns)]
        out = []
        for c in self.lift:
            j = names.index(c) if c in names else None
            stats = [md.row_group(i).column(j).statistics for i in range(md.num_row_groups)] if j is not None else []
            if stats and all(st is not None and st.null_count == md.row_group(i).num_rows
                             for i, st in enumerate(stats)):
                out.append(c)
        return out

    def result(self, table: pd.DataFrame | None, path: Path | None = None) -> ReadResult:
        notes = []
        if self.fmt in NOTES:
            notes.append(NOTES[self.fmt])
        elif self.fmt in PROMPT_SETS:
            notes.append(_PROMPT_NOTE.format(self.fmt))
        if self.drop and self.kept and self.schema is not None and self.fmt in ("wildchat", "lmsys", "openai_jsonl", "sharegpt"):
            notes.append("Fields that identify people (" + ", ".join(sorted(self.drop)) + "), where records have "
                         "them, were left out (--keep-identifying, or keep_identifying=True, keeps them).")
        if not self.keep_meta:
            notes.append("The records' other fields were not kept (--no-meta, or keep_meta=False): no `meta` column.")
        for c in self._absent_columns(table, path):
            notes.append(f"Column {c!r} (--column) is null in every row: no record has this field (misspelt?).")
        if self.warnings["rejected_prefix_differs"]:
            notes.append(f"{self.warnings['rejected_prefix_differs']} conversations: the rejected transcript does "
                         f"not share the chosen one's prefix, so `rejected` is null there.")
        return ReadResult(table=table, quarantined=self.quarantined, reasons=Counter(self.reasons),
                          records=self.records, rows=self.kept, notes=notes, files=list(self._files), path=path,
                          quarantine=self.quarantine)


def _write_chunks(chunks: Iterator[pa.Table], path: Path, chunk_rows: int) -> None:
    """Write the tables of ``chunks`` to one Parquet file, in a second thread: compressing a
    chunk then overlaps with making the next one (DuckDB and pyarrow both release the GIL)."""
    queue: Queue = Queue(maxsize=2)
    failed: list[BaseException] = []

    def write() -> None:
        writer = None
        try:
            while (t := queue.get()) is not None:
                if failed:
                    continue  # drain, so the producer never blocks
                if writer is None:
                    # no dictionaries or min/max statistics for the long JSON text columns: both
                    # cost time for nothing (their values are unique and never filtered on)
                    long = [n for n in t.schema.names if n in ("messages", "message_meta", "meta", "tools", "rejected")
                            or pa.types.is_nested(t.schema.field(n).type)]
                    short = [n for n in t.schema.names if n not in long]
                    writer = pq.ParquetWriter(path, t.schema, use_dictionary=short, write_statistics=short,
                                              compression="snappy")  # the fastest to write (zstd-1: 40 % slower)
                writer.write_table(t, row_group_size=max(chunk_rows, 1))
        except BaseException as e:  # noqa: BLE001 - handed to the producer
            failed.append(e)
        finally:
            if writer is not None:
                writer.close()

    thread = threading.Thread(target=write, name="depsim-convert-writer", daemon=True)
    thread.start()
    try:
        for t in chunks:
            if failed:
                break
            queue.put(t)
    finally:
        queue.put(None)
        thread.join()
    if failed:
        raise failed[0]


def refuse_overwrite(inputs: Iterable[Path] | str, path: str | Path, what: str = "the output") -> None:
    """Raise InputError (one line naming ``path``) if ``path`` is one of the ``inputs`` files
    (it would be replaced); nothing for a hub id (``inputs`` a string) or a new path."""
    path = Path(path)
    if isinstance(inputs, str) or not path.exists():
        return
    for f in inputs:
        if Path(f).exists() and os.path.samefile(f, path):
            raise InputError(f"{path}: {what} would overwrite an input file; choose another path", file=str(path))


def _to_pandas(tables: list[pa.Table]) -> pd.DataFrame:
    return pa.concat_tables(tables).to_pandas()


def read_conversations(path: str | os.PathLike, fmt: str, *, quarantine: str | os.PathLike | None = None,
                       max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS, source: str | None = None,
                       columns: Iterable[str] = (), chunk_rows: int = DEFAULT_CHUNK_ROWS,
                       max_line_bytes: int | None = None, keep_identifying: bool = False,
                       quarantine_raw: bool = False, progress: bool | None = False,
                       memory_limit: str | None = None, json_path: str | None = None,
                       keep_meta: bool = True, mapping: dict[str, str] | None = None,
                       spill_dir: str | None = None) -> ReadResult:
    """Read conversations into the canonical table.

    ``path``: a file, a folder (every file of the format under it, sorted), a glob, a list of
    those (read in order, ids unique across all), or for
    ``wildchat``/``lmsys``/``sharegpt`` a Hugging Face hub id such as ``allenai/WildChat-1M``
    (needs the ``datasets`` package and a network; otherwise an InputError says which is
    missing). ``fmt``: one of :data:`FORMATS`:

    - ``openai_jsonl``: one ``{"id"?, "messages", "tools"?, "model"?, "source"?, "language"?,
      "surface"?, "created_at"?, ...}`` per line (gzip allowed); other fields go to ``meta``.
      Without an id, the id is ``<file stem>:<line>``.
    - ``wildchat``: the WildChat / WildChat-1M / -4.8M schema, from .parquet, .jsonl or .json.
    - ``lmsys``: the LMSYS-Chat-1M schema, from .parquet, .jsonl or .json.
    - ``sharegpt``: ``{"id", "conversations": [{"from", "value"}]}``; ``function_call`` and
      ``observation`` turns become tool calls and tool results.
    - ``hh_rlhf``: Anthropic HH-RLHF lines; the ``chosen`` transcript is the conversation and the
      rejected final turn goes to ``rejected``; ids are ``<file stem>:<line>``.
    - ``parquet``: an already canonical table; validated row by row, extra columns kept.

    ``quarantine``: write bad records there (JSONL) instead of raising; ``source``: override
    the ``source`` column; ``max_message_chars``: a longer message makes its record bad;
    ``columns``: record fields to keep as their own (string) columns rather than in ``meta``,
    e.g. ``["intent"]`` for a reweighting stratum; ``max_line_bytes``: a longer JSONL line is
    bad without being parsed (default 256 MiB or 4 x max_message_chars).

    ``keep_identifying``: keep the fields that identify people (:data:`IDENTIFYING_FIELDS`:
    WildChat's ``hashed_ip``, ``header`` with the user agent, ``country``, ``state``), which are
    left out by default; ``quarantine_raw``: also write each bad record's raw text (up to 2,000
    characters) to the quarantine file, which otherwise holds only where and why;
    ``progress``: a progress bar on stderr (None: when stderr is a terminal);
    ``memory_limit``: DuckDB's memory limit for the bulk path (e.g. ``"4GB"``; default DuckDB's,
    80 % of RAM) and ``spill_dir`` the folder it spills to; ``json_path``: where the records
    are inside a JSON document that is not a plain array or JSONL, as dotted keys
    (``instances`` for ``{"instances": [...]}``);
    ``keep_meta``: keep the record's other fields (True, lossless): as JSON in ``meta``, except
    that when every input is WildChat / LMSYS Parquet the nested ones (the per-message
    moderation records, about 30 numbers a message) are kept as their own columns with the
    input's Arrow type (writing them as JSON text was most of the conversion time,
    ``benchmarks/ingest_speed.py``); their type comes from the first file, and a later file
    with another type for one of them is refused. False leaves ``meta`` and these columns out;
    ``mapping`` (openai_jsonl): canonical field -> dotted record field for logs in another
    layout, e.g. ``{"prompt": "user_input", "response": "model_output", "id": "conv_id"}``
    (ToxicChat); ``prompt``/``response``/``system`` make the messages from text fields, the
    other keys of :data:`MAPPING_KEYS` name where that value is.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown conversation format {fmt!r}; expected one of {', '.join(FORMATS)}"
                         + (" (prompt sets are read by read_prompt_set)" if fmt in PROMPT_SETS else ""))
    run = _Run(path, fmt, quarantine=quarantine, max_message_chars=max_message_chars, source=source,
               chunk_rows=chunk_rows, max_line_bytes=max_line_bytes, columns=columns,
               keep_identifying=keep_identifying, quarantine_raw=quarantine_raw, progress=progress,
               memory_limit=memory_limit, json_path=json_path, keep_meta=keep_meta, mapping=mapping,
               spill_dir=spill_dir)
    tables = list(run.chunks())
    return run.result(_to_pandas(tables))


def read_prompt_set(path: str | os.PathLike, kind: str, *, quarantine: str | os.PathLike | None = None,
                    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS, source: str | None = None,
                    quarantine_raw: bool = False) -> ReadResult:
    """Read a challenging-prompt set into single-turn conversations (canonical schema, surface
    ``eval``, language ``en``, a ``category`` column where the set has one). ``kind``:

    - ``xstest`` (xstest_prompts.csv: id, prompt, type, label, focus, note): category = type,
      ``label`` safe/unsafe kept.
    - ``harmbench`` (Behavior, FunctionalCategory, SemanticCategory, Tags, ContextString,
      BehaviorID): category = SemanticCategory; a contextual behaviour's prompt is
      ``context + "\\n\\n---\\n\\n" + behaviour`` (HarmBench's own template).
    - ``strongreject`` (category, source, forbidden_prompt): its ``source`` -> ``prompt_source``.
    - ``simple_safety_tests`` (id, harm_area, counter, category, prompts_final): category =
      harm_area; its own ``category`` (the kind of request) -> ``prompt_type``.
    - ``advbench``: either the original (goal, target) or HarmBench's copy (Behavior, ...,
      BehaviorID); no category.
    - ``jailbreakbench``: a JailbreakBench artifact JSON, or a folder of them (one per model);
      ``model`` is the model the artifact's prompts were sent to, ``response`` and
      ``jailbroken`` are its logged answer and judge labels.
    """
    if kind not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {kind!r}; expected one of {', '.join(PROMPT_SETS)}")
    run = _Run(path, kind, quarantine=quarantine, max_message_chars=max_message_chars, source=source,
               chunk_rows=DEFAULT_CHUNK_ROWS, max_line_bytes=None, quarantine_raw=quarantine_raw)
    tables = list(run.chunks())
    return run.result(_to_pandas(tables))


def convert(path: str | os.PathLike, fmt: str, out_parquet: str | os.PathLike, *,
            quarantine: str | os.PathLike | None = None, max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
            source: str | None = None, columns: Iterable[str] = (), chunk_rows: int = DEFAULT_CHUNK_ROWS,
            max_line_bytes: int | None = None, keep_identifying: bool = False, quarantine_raw: bool = False,
            progress: bool | None = None, memory_limit: str | None = None,
            json_path: str | None = None, keep_meta: bool = True,
            mapping: dict[str, str] | None = None, spill_dir: str | None = None) -> ReadResult:
    """Read ``path`` (any conversation format or prompt set) and write the canonical table to
    ``out_parquet``, chunk by chunk (one row group per ``chunk_rows`` rows), atomically: a temp
    file renamed into place, so a failed or killed run leaves no partial output. Returns a
    :class:`ReadResult` with ``table=None`` and ``path`` set. The other arguments are those of
    :func:`read_conversations`; ``out_parquet`` or ``quarantine`` naming one of the input files
    is refused (an input is never overwritten)."""
    run = _Run(path, fmt, quarantine=quarantine, max_message_chars=max_message_chars, source=source,
               chunk_rows=chunk_rows, max_line_bytes=max_line_bytes, columns=columns,
               keep_identifying=keep_identifying, quarantine_raw=quarantine_raw, progress=progress,
               memory_limit=memory_limit, json_path=json_path, keep_meta=keep_meta, mapping=mapping,
               spill_dir=spill_dir)
    out = Path(out_parquet)
    refuse_overwrite(run.inputs, out, "the output")
    if out.is_dir():
        raise InputError(f"{out}: the output is a folder; give a file path such as {out / 'conversations.parquet'}",
                         file=str(out))
    if run.quarantine is not None and out.resolve() == run.quarantine.resolve():
        raise InputError(f"{out}: the output and the quarantine file are the same file; give two paths", file=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        _write_chunks(run.chunks(), tmp, chunk_rows)
        if run.kept == 0 and out.exists():  # a failed run never replaces an earlier, good output
            res = run.result(None, None)
            res.notes.append(f"No record was kept, so {out} was left as it was (it holds an earlier conversion).")
            return res
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return run.result(None, out)


# ----------------------------------------------------------------------------- plain JSON records

def _array_keys(node, prefix: str = "", depth: int = 3) -> list[str]:
    """Return the dotted keys of ``node`` (a JSON object) whose values are non-empty arrays,
    looking ``depth`` levels down."""
    out = []
    for k, v in node.items():
        if isinstance(v, list) and v:
            out.append(f"{prefix}{k}")
        elif isinstance(v, dict) and depth > 1:
            out += _array_keys(v, f"{prefix}{k}.", depth - 1)
    return out


def read_json_records(path: Path, json_path: str | None, *, document: bool) -> list[dict]:
    """Return the records (JSON objects) of a JSON or JSONL file, read by :mod:`depsim.readers`
    as ``depsim convert`` reads them: with ``json_path``, the array at that dotted key of a
    JSON document; else, for a JSON file (``document``), a top-level array of records; else one
    object per line. Raises :class:`depsim.readers.InputError` (a ValueError) naming the file
    and its line (JSONL, 1-based) or record (JSON array, 0-based) of a bad record; for a JSON
    object without ``json_path``, one that names the keys holding arrays and asks for --json-path."""
    if json_path:
        recs = _json_doc(path, json_path)
    else:
        first = _first_char(path) if document else ""
        if first == "[":
            recs = _json_array(path)
        elif first == "{" and (doc := _json_object(path)) is not None:
            keys = _array_keys(doc)
            raise InputError(f"{path}: a JSON object, not records: give --json-path with the key of its array of "
                             + (f"records (keys holding arrays: {', '.join(keys)})" if keys
                                else "records (no key of it holds an array)"), file=str(path))
        else:
            recs = _jsonl(path, DEFAULT_MAX_LINE_BYTES, array_hint="a JSON array of records is read from a .json file")
    rows = []
    for loc, _raw, obj in recs:
        if isinstance(obj, _Bad):
            raise _fatal(loc, obj.detail)
        if not isinstance(obj, dict):
            raise _fatal(loc, f"a record is {_tn(obj)}, not an object with the fields")
        rows.append(obj)
    return rows


def read_csv_records(path: Path) -> pd.DataFrame:
    """Return the records of a CSV file (``.csv`` or gzipped) as a frame of strings, empty cells
    None, parsed as prompt sets are (:func:`_csv`, strictly). Raises :class:`InputError` naming
    the file and line of the first record that does not parse (an unterminated quote, which a
    lenient parser would merge with the rows after it) or has the wrong number of fields."""
    rows = []
    for loc, _raw, obj in _csv(Path(path)):
        if isinstance(obj, _Bad):
            raise _fatal(loc, obj.detail)
        rows.append({k: (v if v != "" else None) for k, v in obj.items()})
    return pd.DataFrame(rows, columns=_csv_header(Path(path)), dtype=object)


def _json_object(path: Path) -> dict | None:
    """Return the JSON document in ``path`` when it is one object; None when the file holds more than
    one value (JSONL named .json). Raises InputError naming the line of a syntax error."""
    try:
        with _open_binary(path) as fh:
            doc = json.loads(fh.read().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise _fatal(str(path), f"the file is not valid UTF-8 ({e.reason})") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # values after the first: one object per line
            return None
        raise _fatal(_Loc(str(path), e.lineno), f"invalid JSON ({e.msg})") from None
    return doc if isinstance(doc, dict) else None
