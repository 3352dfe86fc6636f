"""Bulk embedding on Ray: a local Ray cluster's actors give the in-process vectors; without Ray
the flag says how to install it in one line; nothing on the query or --help paths imports Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from .conftest import MODEL_CACHE, ROOT, SEEDS, run_cli


def _paragraphs() -> list[str]:
    return [p.strip() for f in sorted(SEEDS.glob("*.txt"))
            for p in f.read_text(encoding="utf-8").split("\n\n") if len(p.split()) >= 20][:60]


@pytest.fixture(scope="module")
def local_ray():
    """A local two-CPU Ray for this module, its files in a temporary folder (short: Ray's
    socket paths must fit in 107 bytes)."""
    import ray
    with tempfile.TemporaryDirectory(prefix="citebot-ray-") as tmp:
        from index.ray_embed import RayEmbedder  # noqa: F401  (imports fine with ray present)

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.mark.parametrize("backend", ["auto", "bf16"])
def test_vectors_on_ray_equal_the_in_process_ones(local_ray, seeds_library, backend):
    from index.embed import Embedder
    from index.ray_embed import RayEmbedder

    local = Embedder(backend=backend, cache_dir=MODEL_CACHE)
    local._st = seeds_library.embedder._load()  # share the loaded model in this process
    local.small_chars = 0 if backend == "bf16" else local.small_chars  # bf16: bulk work
    texts = _paragraphs()
    want = local.encode(texts)
    on_ray = RayEmbedder(local, actors=2, min_chars=0)
    seen: list[int] = []
    got = on_ray.encode(texts, batch_size=4, progress=seen.append)
    assert local.backend_used == ("bf16" if backend == "bf16" else "onnx")
    assert got.shape == want.shape and (got * want).sum(1).min() >= 0.9999
    assert sum(seen) == len(texts)
    # Actors, not this process; one may do it all while the other still loads the model.
    assert 1 <= len(on_ray.workers) <= 2 and os.getpid() not in on_ray.workers


def test_small_work_stays_in_this_process(local_ray, seeds_library):
    from index.ray_embed import RayEmbedder

    on_ray = RayEmbedder(seeds_library.embedder)
    vec = on_ray.encode_query("who defended Darroch?")
    assert vec.shape == (seeds_library.embedder.dim,) and on_ray.workers == set()


def test_without_ray_the_flag_says_how_to_install_it(index_copy, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: import fails
    code, out, err = run_cli(capsys, "--index", index_copy, "index", "build", "--ray", SEEDS)
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and "pip install 'citebot[ray]'" in err


def test_the_config_key_asks_for_ray_too(index_copy, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    config = tmp_path / "config.toml"
    config.write_text('[index]\nray = "local"\n')
    code, _, err = run_cli(capsys, "--config", config, "--index", index_copy, "index", "build",
                           SEEDS)
    assert code == 1 and "pip install 'citebot[ray]'" in err


def test_ray_stays_out_of_help_and_queries(seeds_index):
    code = ("import sys, contextlib, io\n"
            "from bot.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    with contextlib.suppress(SystemExit):\n"
            "        main(['index', 'build', '--help'])\n"
            f"    main(['--index', {str(seeds_index)!r}, 'search', 'Darroch', '-k', '1'])\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))\n")
    done = subprocess.run([sys.executable, "-c", "import json\n" + code], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
