"""Which path embeds bulk work fastest on this machine while staying within MIN_COSINE of the
reference: measured once on a synthetic sample, then remembered in the cache folder.

The measurement runs each path through a function given the path explicitly (the embedder's
`encode_on`); it never changes how the embedder routes other calls, so a question asked while a
first bulk update measures still takes the torch-free path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .machine import read_json, write_json

log = logging.getLogger("citebot.embed")

MIN_COSINE = 0.999  # a faster bulk path must agree with the reference at least this well
PATHS = ("torch", "bf16", "onnx")
CALIBRATION_TEXTS = 16
CALIBRATION_FORMAT = 2  # bump when the measurement changes, so old verdicts are redone
RECHECK_DAYS = 7  # a measured "no faster path" verdict is measured again after this long
VERDICTS = "bulk-backend.json"

# Embeds texts on the named path, whatever the embedder would route them to.
RunOn = Callable[[str, list[str]], np.ndarray]


def remembered(cache_dir: Path | None, key: str) -> str | None:
    """The path saved for this machine under key, unless missing or due to be measured again."""
    saved = read_json(cache_dir / VERDICTS).get(key, {}) if cache_dir else {}
    if saved.get("backend") == "torch" and _age_days(saved) > RECHECK_DAYS:
        return None  # a machine measured busy may do better now: look again
    return saved["backend"] if saved.get("backend") in PATHS else None


def remember(cache_dir: Path | None, key: str, found: dict[str, Any]) -> None:
    """Save a measurement beside the others of this cache folder."""
    log.info("bulk embedding path: %s (chunks/s %s, min cosine %s)", found["backend"],
             found["chunks_per_s"], found["min_cosine"])
    if cache_dir:
        file = cache_dir / VERDICTS
        write_json(file, {**read_json(file), key: found})


def measure(run_on: RunOn, paths: Sequence[str], texts: list[str]) -> dict[str, Any]:
    """Time the paths (the first is the reference) on texts; the fastest that stays accurate
    and beats the reference by 10 % wins."""
    reference = paths[0]
    runs: list[str] = []
    for name in paths:
        try:
            run_on(name, texts[:4])  # warm-up: first calls allocate and pick kernels
            runs.append(name)
        except Exception as exc:  # a path this machine cannot run is simply not chosen
            if name == reference:
                raise
            log.debug("bulk path %s unavailable: %s", name, exc)
    seconds = dict.fromkeys(runs, float("inf"))
    vecs: dict[str, np.ndarray] = {}
    # Interleaved rounds, so load from other processes hits all paths alike; best of each.
    # Two rounds settle a clear winner; a close call under load gets up to three more.
    for round_ in range(5):
        for name in runs:
            start = time.perf_counter()
            vecs[name] = run_on(name, texts)
            seconds[name] = min(seconds[name], time.perf_counter() - start)
        fastest = min(seconds[n] for n in runs if n != reference) if len(runs) > 1 else 0.0
        if round_ >= 1 and not 0.6 < fastest / seconds[reference] < 1.0:
            break
    cosine = {n: round(float((v * vecs[reference]).sum(1).min()), 6) for n, v in vecs.items()}
    rate = {n: round(len(texts) / s, 1) for n, s in seconds.items()}
    good = [n for n in runs if n == reference
            or (cosine[n] >= MIN_COSINE and seconds[n] < 0.9 * seconds[reference])]
    return {"backend": max(good, key=rate.__getitem__), "chunks_per_s": rate,
            "min_cosine": cosine, "measured": datetime.now(UTC).isoformat(timespec="seconds")}


def calibration_texts(vocab: dict[str, int], max_tokens: int, count: int) -> list[str]:
    """count chunk-sized texts of real vocabulary words, from 48 tokens up to near the limit."""
    words = sorted(w for w in vocab if w.isascii() and w.isalpha() and len(w) > 2)
    words = words or ["citebot"]
    rng = np.random.default_rng(0)
    top = max(48, min(max_tokens - 8, 250))
    out = []
    for n in np.linspace(48, top, max(count, CALIBRATION_TEXTS)).astype(int):
        picks = rng.choice(len(words), n)
        out.append(" ".join(words[i] + ("." if k % 12 == 11 else "")
                            for k, i in enumerate(picks)))
    return out


def _age_days(saved: dict[str, Any]) -> float:
    """Days since a saved measurement; very old when the date is missing or unreadable."""
    try:
        then = datetime.fromisoformat(saved["measured"])
    except (KeyError, TypeError, ValueError):
        return float("inf")
    return (datetime.now(UTC) - then).total_seconds() / 86400
