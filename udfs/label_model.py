"""A distilled quality/harm labeller (the FineWeb-Edu / NeMo Curator recipe): a linear classifier
on hashed word n-grams, trained on LLM labels, that labels the records it is sure about.

Pure numpy, no new dependency. Features are lower-cased word unigrams and bigrams hashed with
CRC-32 (stable across processes and machines, unlike Python's salted ``hash``) into
``features`` buckets, valued 1 + log(count). Two softmax heads share them: quality (high,
medium, low) and harm (none and the three kinds). Training is full-batch L-BFGS on the
L2-regularised cross-entropy from zero weights: no random order, so the same labelled rows give
the same bytes.

``keep_prob = P(quality in quality_keep) x P(harm == none)``. The classifier's labels are the
most probable ones that agree with its keep decision (``keep_prob >= 0.5``), so a record's gate
never contradicts its probability.

``train_batch`` and ``score_batch`` are the Arrow batch functions the label stage runs through
``mapInArrow`` (``lewin.udfs.pool``): training gets every labelled row in one row, scoring
loads the model once per process.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence, get_args

import numpy as np
import pyarrow as pa

from lewin.schemas.llm import HarmKind

QUALITIES = ("high", "medium", "low")
HARMS: tuple[str, ...] = get_args(HarmKind)  # "none" first
KEEP_THRESHOLD = 0.5
# training constants: part of every model's params (and so of its version)
MAX_CHARS = 4000  # the start of a post says what it is; the rest would only cost time
C = 1.0  # inverse L2 strength on the summed loss (scikit-learn's default): it weakens as the sample grows
FEATURIZER = "crc32 of lower-cased word 1-2 grams, 1 + log(count)"

_WORD = re.compile(r"\w+")


def training_params(features: int, epochs: int) -> dict:
    return {"features": features, "epochs": epochs, "C": C, "max_chars": MAX_CHARS, "featurizer": FEATURIZER,
            "optimizer": "L-BFGS"}


# --- features ------------------------------------------------------------------------------------
def grams(text: str | None) -> list[str]:
    words = _WORD.findall((text or "")[:MAX_CHARS].lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


@dataclass(frozen=True)
class Features:
    """Sparse rows (CSR): row i's buckets are ``indices[indptr[i]:indptr[i + 1]]``."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray


def featurize(texts: Sequence[str | None], dim: int) -> Features:
    n = len(texts)
    rows: list[int] = []
    ids: list[int] = []
    for i, t in enumerate(texts):
        g = grams(t)
        ids.extend(zlib.crc32(x.encode()) for x in g)
        rows.extend([i] * len(g))
    # one sort over the batch: (row, bucket) pairs with their counts, in CSR order
    keys, counts = np.unique(np.asarray(rows, np.int64) * dim + np.asarray(ids, np.int64) % dim, return_counts=True)
    row, col = keys // dim, keys % dim
    val = 1.0 + np.log(counts)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n))])
    return Features(indptr, col, val)


def _row_sums(contrib: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Per-row sums of CSR-ordered rows of ``contrib`` (empty rows give 0)."""
    cs = np.vstack([np.zeros((1, contrib.shape[1])), np.cumsum(contrib, axis=0)])
    return cs[indptr[1:]] - cs[indptr[:-1]]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


_HEADS = (slice(0, len(QUALITIES)), slice(len(QUALITIES), len(QUALITIES) + len(HARMS)))


def _probabilities(logits: np.ndarray) -> np.ndarray:
    return np.hstack([_softmax(logits[:, h]) for h in _HEADS])


# --- the model -----------------------------------------------------------------------------------
@dataclass
class LabelModel:
    version: str
    weights: np.ndarray
    """(features, 7): the quality head's 3 columns, then the harm head's 4."""
    bias: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.weights.shape[0]

    def probabilities(self, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """P(quality) (n, 3) and P(harm) (n, 4), columns in QUALITIES and HARMS order."""
        x = featurize(texts, self.dim)
        logits = _row_sums(self.weights[x.indices].astype(np.float64) * x.values[:, None], x.indptr) + self.bias
        p = _probabilities(logits)
        return p[:, _HEADS[0]], p[:, _HEADS[1]]

    def decide(self, texts: Sequence[str | None], quality_keep: Sequence[str]):
        """keep_prob, quality, harm per text: the labels are the most probable ones that agree
        with the keep decision (kept: a kept quality and no harm; rejected: the likelier reason)."""
        pq, ph = self.probabilities(texts)
        kept_q = np.isin(QUALITIES, list(quality_keep))
        p_quality, p_safe = pq[:, kept_q].sum(axis=1), ph[:, 0]
        keep_prob = p_quality * p_safe
        keep = keep_prob >= KEEP_THRESHOLD
        best_kept = np.where(kept_q, pq, -1).argmax(axis=1)
        best_rejected = np.where(~kept_q, pq, -1).argmax(axis=1)
        # rejected for harm when that is the less likely half of keep_prob (always, if every quality is kept)
        for_harm = (p_safe <= p_quality) | ~(~kept_q).any()
        quality = np.where(keep, best_kept, np.where(for_harm, pq.argmax(axis=1), best_rejected))
        harm = np.where(keep, 0, np.where(for_harm, 1 + ph[:, 1:].argmax(axis=1), ph.argmax(axis=1)))
        return keep_prob, [QUALITIES[i] for i in quality], [HARMS[i] for i in harm]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = json.dumps({"version": self.version, "params": self.params, "qualities": QUALITIES, "harms": HARMS})
        np.savez_compressed(buf, weights=self.weights.astype(np.float32), bias=self.bias.astype(np.float64),
                            meta=np.frombuffer(meta.encode(), dtype=np.uint8))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "LabelModel":
        with np.load(io.BytesIO(bytes(blob)), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if tuple(meta["qualities"]) != QUALITIES or tuple(meta["harms"]) != HARMS:
                raise ValueError(f"label model {meta['version']} was trained on other classes: {meta}")
            return cls(meta["version"], z["weights"], z["bias"], meta["params"])


def _lbfgs(fg, theta: np.ndarray, iterations: int, memory: int = 10, tol: float = 1e-7) -> np.ndarray:
    """Minimise ``fg(theta) -> (loss, gradient)`` by L-BFGS with a backtracking (Armijo) line search."""
    f, g = fg(theta)
    steps: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(iterations):
        d, alphas = -g, []
        for s, y in reversed(steps):
            a = (s @ d) / (y @ s)
            d = d - a * y
            alphas.append(a)
        if steps:
            s, y = steps[-1]
            d = d * (s @ y) / (y @ y)
        else:
            d = d / max(1.0, float(np.linalg.norm(g)))
        for (s, y), a in zip(steps, reversed(alphas)):
            d = d + (a - (y @ d) / (y @ s)) * s
        slope, step = g @ d, 1.0
        if slope >= 0:  # not a descent direction: start again from the gradient
            steps, d, slope = [], -g, -(g @ g)
        while True:
            f_new, g_new = fg(theta + step * d)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            step /= 2
        s, y = step * d, g_new - g
        theta = theta + s
        if s @ y > 1e-12:
            steps = (steps + [(s, y)])[-memory:]
        done = f - f_new < tol
        f, g = f_new, g_new
        if done:
            break
    return theta


def train(texts: Sequence[str | None], qualities: Sequence[str], harms: Sequence[str], version: str,
          features: int, epochs: int) -> LabelModel:
    """Both heads' mean cross-entropy + L2 (``C``), minimised by full-batch L-BFGS from zero weights:
    no random order, so the same rows give the same model. Only the buckets the rows use are
    optimised (the others stay at zero under L2 anyway)."""
    n, k = len(texts), len(QUALITIES) + len(HARMS)
    x = featurize(texts, features)
    rows = np.repeat(np.arange(n), np.diff(x.indptr))
    used, cols = np.unique(x.indices, return_inverse=True)
    l2 = 1 / (C * n)
    y = np.zeros((n, k))
    y[np.arange(n), [QUALITIES.index(q) for q in qualities]] = 1
    y[np.arange(n), [len(QUALITIES) + HARMS.index(h) for h in harms]] = 1
    u = len(used)

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-k].reshape(u, k), theta[-k:]
        z = _row_sums(w[cols] * x.values[:, None], x.indptr) + b
        loss, p = 0.5 * l2 * float((w * w).sum()), np.empty_like(z)
        for head in _HEADS:
            zh = z[:, head] - z[:, head].max(axis=1, keepdims=True)
            log_p = zh - np.log(np.exp(zh).sum(axis=1, keepdims=True))
            loss -= float((y[:, head] * log_p).sum()) / n
            p[:, head] = np.exp(log_p)
        err = (p - y) / n
        gw = np.stack([np.bincount(cols, weights=x.values * err[rows, c], minlength=u) for c in range(k)], axis=1)
        return loss, np.concatenate([(gw + l2 * w).ravel(), err.sum(axis=0)])

    theta = _lbfgs(loss_and_gradient, np.zeros(u * k + k), epochs)
    weights = np.zeros((features, k), np.float32)
    weights[used] = theta[:-k].reshape(u, k)
    return LabelModel(version, weights, theta[-k:], training_params(features, epochs))


# --- Arrow batch functions (mapInArrow) ------------------------------------------------------------
@dataclass(frozen=True)
class TrainOptions:
    version: str
    features: int
    epochs: int


def train_batch(batch: pa.RecordBatch, opts: TrainOptions) -> Iterator[pa.RecordBatch]:
    """Each input row holds the whole training set (``rows``: record_id, text, quality, harm);
    out: one row, ``model_version`` and ``model`` (npz bytes). Rows are sorted by
    record_id first: the order Spark collected them in must not change the model."""
    for rows in batch.column("rows").to_pylist():
        rows = sorted(rows or [], key=lambda r: r["record_id"])
        if not rows:
            continue
        model = train([r["text"] for r in rows], [r["quality"] for r in rows], [r["harm"] for r in rows],
                      opts.version, opts.features, opts.epochs)
        yield pa.RecordBatch.from_arrays([pa.array([opts.version]), pa.array([model.to_bytes()], pa.binary())],
                                         names=["model_version", "model"])


@dataclass(frozen=True)
class ScoreOptions:
    version: str
    model: bytes = field(repr=False)
    quality_keep: tuple[str, ...] = ("high",)


_LOADED: dict[str, LabelModel] = {}
_LOAD_LOCK = threading.Lock()


def _loaded(opts: ScoreOptions) -> LabelModel:
    """The model, decoded once per process (every batch of a run carries the same version)."""
    with _LOAD_LOCK:
        model = _LOADED.get(opts.version)
        if model is None:
            _LOADED.clear()
            model = _LOADED[opts.version] = LabelModel.from_bytes(opts.model)
        return model


def score_batch(batch: pa.RecordBatch, opts: ScoreOptions) -> Iterator[pa.RecordBatch]:
    """``record_id``, ``text`` -> ``record_id``, ``keep_prob``, ``quality``, ``harm`` (the
    classifier's labels)."""
    keep_prob, quality, harm = _loaded(opts).decide(batch.column("text").to_pylist(), opts.quality_keep)
    yield pa.RecordBatch.from_arrays(
        [batch.column("record_id"), pa.array(keep_prob, pa.float64()), pa.array(quality, pa.string()),
         pa.array(harm, pa.string())], names=["record_id", "keep_prob", "quality", "harm"])
