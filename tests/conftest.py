"""Shared fixtures: one real model per test session, one seeds index built from it.

Paths and the seeds Config come from bench/common.py, which the benchmarks run against too,
so a test and a benchmark of the seeds index always mean the same index.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bench.common import ROOT, SEEDS, seeds_config

if TYPE_CHECKING:  # imported lazily below: the environment must be set before the model stack
    from index.library import Library

__all__ = ["ROOT", "SEEDS", "library", "run_cli", "seeds_config"]

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`citebot ARGV` in this process: exit code, stdout, stderr."""
    from bot.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def library(index_dir: Path, seeds_library: Library) -> Library:
    """Another Library at index_dir with the session's model and settings, as a second process
    (the bot beside a `citebot index build`) would open it."""
    from index.library import Library

    return Library(index_dir, seeds_library.embedder, seeds_library.settings)


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
