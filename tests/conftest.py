"""Shared fixtures: one real model per test session, one seeds index built from it, and a
temporary HOME and model cache for the whole run.

Before any test imports the model stack, HOME and XDG_CACHE_HOME point into one temporary
folder for the session (and every process the tests start inherits them), so the ONNX export
is made once per run, shared by every test, and removed with the folder at the end: the tests
write nothing into the user's home.

Paths, the seeds Config and the shared evaluation sets come from bench/common.py, which the
benchmarks run against too; test files take them from here, never from bench/ directly.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bench.common import ROOT, SEED_QUESTIONS, SEEDS, SHARED_EVAL, seeds_config

if TYPE_CHECKING:  # imported lazily below: the environment must be set before the model stack
    from index.library import Library

__all__ = ["MODEL_CACHE", "REAL_HOME", "ROOT", "SEEDS", "SEED_QUESTIONS", "SHARED_EVAL",
           "SESSION_DIR", "library", "run_cli", "seeds_config"]

REAL_HOME = Path(os.environ.get("HOME") or Path.home())  # the user's, never written to
# Made when this conftest loads, which pytest does before it imports any test module.
SESSION_DIR = Path(tempfile.mkdtemp(prefix="citebot-tests-"))
MODEL_CACHE = SESSION_DIR / "cache" / "citebot"  # what bot.app.cache_dir gives from here on

os.environ["HOME"] = str(SESSION_DIR / "home")
os.environ["XDG_CACHE_HOME"] = str(SESSION_DIR / "cache")
os.environ["XDG_CONFIG_HOME"] = str(SESSION_DIR / "config")  # matplotlib and friends
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
(SESSION_DIR / "home").mkdir()


def pytest_unconfigure(config) -> None:
    """The run is over: the temporary home and cache (with its ONNX export) go."""
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


# A run that stops before it is configured (a usage error: "pytest -n0" without xdist) never
# reaches pytest_unconfigure; the folder goes when the process exits all the same (this
# process only: a forked child that exits must not take it from under the run).
_PID = os.getpid()
atexit.register(lambda: os.getpid() == _PID and shutil.rmtree(SESSION_DIR, ignore_errors=True))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`citebot ARGV` in this process: exit code, stdout, stderr."""
    from bot.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def index_files(folder: Path) -> dict[str, bytes]:
    """Every file of an index folder by relative path, for "the index did not change" checks;
    SQLite's -wal/-shm files come and go with its connections and .lock with writers."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock" and not p.name.endswith(("-wal", "-shm"))}


def library(index_dir: Path, seeds_library: Library) -> Library:
    """Another Library at index_dir with the session's model and settings, as a second process
    (the bot beside a `citebot index build`) would open it."""
    from index.library import Library

    return Library(index_dir, seeds_library.embedder, seeds_library.settings)


@pytest.fixture(scope="session", autouse=True)
def small_bulk_measurement():
    """The bulk-path measurement on its smallest sample (16 texts): a run measures once, in
    seconds; the full measurement is bench/build.py's to time."""
    from index import bulk_path

    real = bulk_path.calibration_texts
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bulk_path, "calibration_texts",
                      lambda vocab, max_tokens, count: real(vocab, max_tokens, 0))
        yield


@pytest.fixture(scope="session")
def shared_eval() -> Path:
    """../shared/eval (beside the checkout, or beside the main one of a worktree); the test
    is skipped where it is absent."""
    if not SHARED_EVAL.is_dir():
        pytest.skip(f"no shared evaluation sets at {SHARED_EVAL}")
    return SHARED_EVAL


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The session's model cache: one ONNX export and bulk measurement for the whole run."""
    return MODEL_CACHE


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory) -> Path:
    """citebot's log file (bot.guard.log_path) lands in a temporary folder, not the user's."""
    state = tmp_path_factory.mktemp("state")
    os.environ["XDG_STATE_HOME"] = str(state)
    return state


@pytest.fixture(scope="session")
def seeds_index(tmp_path_factory) -> Path:
    """A seeds index built once per session with the real model; tests copy, never modify."""
    from bot.app import make_library, source_specs

    folder = tmp_path_factory.mktemp("seeds-index") / "index"
    cfg = seeds_config(folder)
    make_library(cfg).update(source_specs(cfg))
    return folder


@pytest.fixture(scope="session")
def seeds_library(seeds_index):
    from bot.app import make_library

    return make_library(seeds_config(seeds_index))


@pytest.fixture
def embedder(seeds_library):
    return seeds_library.embedder


@pytest.fixture
def index_copy(seeds_index, tmp_path) -> Path:
    """A private copy of the seeds index that a test may change or damage."""
    dest = tmp_path / "index"
    shutil.copytree(seeds_index, dest)
    return dest
