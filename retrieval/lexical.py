"""Lexical analysis for the BM25 leg: text in, space-separated terms out, the same for chunks and queries.

Every store indexes what ``analyze`` returns (Milvus: in the ``lexical`` field, split on spaces by the
server; the in-memory store: its own BM25), and every bm25 query is analysed the same way, so Milvus never
analyses language itself (Milvus Lite has no stemmer, and its jieba tokenizer keeps punctuation as terms).

Steps, in order:

1. Unicode NFKC (full-width letters, digits and punctuation become their ASCII forms: "？" → "?", "Ａ" → "A";
   ligatures are split), then lower case.
2. The language of the whole text, from its scripts (``detect_language``): every CJK ideograph counts as one
   unit, every run of other letters as one word (digits count for no script); ``zh`` when ideographs are at
   least as many as Latin-script words and more than the words of other scripts, ``en`` when Latin-script
   words are the most (ties go to ``en``), ``other`` otherwise (Cyrillic, Greek, Arabic, Devanagari, kana,
   hangul...; also text without letters). It is decided per chunk and per query, never by a setting.
3. Terms, by language:

   ``en``     runs of letters and digits (``[^\\W_]+``: punctuation and "_" separate words); a run that
              holds CJK ideographs is split there and its ideographs segmented as in ``zh``.
   ``zh``     jieba's search segmentation (``cut_for_search``: words and their shorter dictionary words);
              tokens made of punctuation or spaces are dropped, tokens that mix letters and punctuation
              (jieba keeps "c++", "3.5%", "covid-19" whole) are split as in ``en``.
   ``other``  as ``en``, without stop words or stemming for words not in Latin script.

4. Latin-script words (in every language: Latin terms in Chinese text are nearly always English) lose the
   English stop words (``ENGLISH_STOP_WORDS``: the 33 words Lucene's English analyser drops, also the list
   ``bm25s`` uses) and are stemmed with the Snowball English stemmer (PyStemmer). Chinese text keeps every
   word: its function words are few and short, and BM25's idf already gives them little weight. Words of
   other scripts are kept as they are.

The output has only letters, digits and single spaces, so Milvus's ``standard`` tokenizer (tantivy's
SimpleTokenizer on a server, ``\\w+`` on Milvus Lite) splits it back into exactly these terms.
``ANALYSIS_VERSION`` changes whenever the output for some text changes, so an index built by an older
analysis can be told apart (``sieve reindex`` moves it to the current one).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from typing import Literal

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (bm25s.stopwords.STOPWORDS_EN is the same list).
ENGLISH_STOP_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no"]
    + ["not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this"]
    + ["to", "was", "will", "with"]
)
Language = Literal["en", "zh", "other"]
LANGUAGES: tuple[Language, ...] = ("en", "zh", "other")
ANALYSIS_VERSION = "1"

_HAN_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_HAN = re.compile(f"[{_HAN_RANGES}]")
_HAN_RUN = re.compile(f"[{_HAN_RANGES}]+")
_WORD = re.compile(r"[^\W_]+")
# Latin-script letters: ASCII, Latin-1 Supplement, Latin Extended-A/B, IPA, Latin Extended Additional.
_LATIN = re.compile("[a-z\u00c0-\u024f\u0250-\u02af\u1e00-\u1eff]")
_lock = threading.Lock()


def normalize(text: str) -> str:
    """NFKC, lower case: what every later step sees."""
    return unicodedata.normalize("NFKC", text).lower()


def detect_language(text: str) -> Language:
    """The language whose analysis ``analyze`` applies to ``text`` (see the module docstring)."""
    return _detect(normalize(text))


def analyze(text: str, language: Language | None = None) -> str:
    """The terms of ``text``, separated by single spaces ('' when nothing is left)."""
    return " ".join(terms(text, language))


def terms(text: str, language: Language | None = None) -> list[str]:
    """The terms of ``text`` in order (see the module docstring); ``language`` overrides the detector."""
    clean = normalize(text)
    chosen = language or _detect(clean)
    if chosen not in LANGUAGES:
        raise ValueError(f"unknown language {chosen!r}: use one of {', '.join(LANGUAGES)}")
    tokens = _zh_tokens(clean) if chosen == "zh" else _word_tokens(clean)
    return [term for token in tokens if (term := _word_term(token))]


def _detect(clean: str) -> Language:
    han = len(_HAN.findall(clean))
    latin = other = 0
    for word in _WORD.findall(_HAN.sub(" ", clean)):
        if _LATIN.search(word):
            latin += 1
        elif not word.isdigit():  # digits belong to no script
            other += 1
    if han and han >= latin and han > other:
        return "zh"
    return "en" if latin and latin >= other else "other"


def _word_tokens(clean: str) -> Iterator[str]:
    for word in _WORD.findall(clean):
        if not _HAN.search(word):
            yield word
            continue
        start = 0
        for run in _HAN_RUN.finditer(word):
            if run.start() > start:
                yield word[start : run.start()]
            yield from _cut(run.group())
            start = run.end()
        if start < len(word):
            yield word[start:]


def _zh_tokens(clean: str) -> Iterator[str]:
    for token in _cut(clean):
        if _WORD.fullmatch(token):
            yield token
        else:  # punctuation, spaces, or letters mixed with punctuation ("c++", "covid-19", "3.5%")
            yield from _WORD.findall(token)


def _word_term(token: str) -> str:
    if not _LATIN.search(token):
        return token
    if token in ENGLISH_STOP_WORDS:
        return ""
    return _english_stem()(token)


def _cut(text: str) -> Iterator[str]:
    return iter(_jieba().cut_for_search(text))


@functools.cache
def _english_stem() -> Callable[[str], str]:
    import Stemmer

    local = threading.local()  # a PyStemmer object must not be used by two threads at once

    def stem(word: str) -> str:
        stemmer = getattr(local, "stemmer", None)
        if stemmer is None:
            stemmer = local.stemmer = Stemmer.Stemmer("english")
        return str(stemmer.stemWord(word))

    return functools.lru_cache(maxsize=100_000)(stem)


@functools.cache
def _jieba():  # type: ignore[no-untyped-def] # jieba ships no type hints
    import jieba

    with _lock:  # load the dictionary once, quietly (it logs each load at INFO on its own logger)
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
    return jieba
