"""The test run leaves no trace outside its temporary folders: HOME and the model cache point
into the session's folder (see conftest), and the query path writes nothing into a home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import MODEL_CACHE, REAL_HOME, ROOT, SESSION_DIR


def test_the_model_cache_in_use_is_the_sessions(seeds_library):
    from bot.app import cache_dir
    from bot.config import Config

    assert Path.home() == SESSION_DIR / "home"
    assert cache_dir(Config()) == MODEL_CACHE == seeds_library.embedder.cache_dir
    assert REAL_HOME / ".cache" not in [MODEL_CACHE, *MODEL_CACHE.parents]  # not the user's
    # The seeds index was built in this run, so its export is here, made once for every test.
    assert len(list(MODEL_CACHE.glob("onnx/*/meta.json"))) == 1


def test_asking_writes_nothing_into_home(seeds_index, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(MODEL_CACHE.parent)}
    env.pop("XDG_CONFIG_HOME", None)
    done = subprocess.run([sys.executable, "-m", "bot.cli", "--index", str(seeds_index), "ask",
                           "who defended Darroch?", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '"citations"' in done.stdout
    assert list(home.iterdir()) == []


def test_the_bot_process_helper_makes_no_session_folder(tmp_path):
    """`python -m tests.botharness` (the real `citebot bot` process of the shard tests) runs
    outside pytest: it must not import conftest, whose session folder only pytest removes."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", "import tests.botharness"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("citebot-tests-*"))
