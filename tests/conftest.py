"""Shared fixtures: one real model per test session, one seeds index built from it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"


def seeds_config(index_dir: Path):
    """A Config that indexes the repository's seeds into index_dir."""
    from bot.config import Config, IndexConfig

    return Config(index=IndexConfig(dir=str(index_dir), sources=[str(SEEDS)]), base_dir=ROOT)


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
