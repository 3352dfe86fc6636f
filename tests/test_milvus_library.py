"""`[store] backend = "milvus"`: every `citebot index` command, search and ask against a real
Milvus Lite 2.5 file, with the real model, compared with the local store's results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.common import SEED_QUESTIONS
from bot import app
from bot.config import load_config

from .conftest import SEEDS, run_cli


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[index]\ndir = "index"\nsources = ["{SEEDS}"]\n\n'
                    f'[store]\nbackend = "milvus"\nuri = "milvus.db"\n')
    yield path
    for key, store in list(app._STORES.items()):  # stop this test's Milvus Lite engine
        if key[0].startswith(str(tmp_path)):
            store.close()
            del app._STORES[key]


def cli(capsys, config: Path, *argv) -> tuple[int, str, str]:
    return run_cli(capsys, "--config", config, *argv)


def test_every_command_works_on_milvus_as_on_the_local_store(capsys, config, seeds_library):
    assert cli(capsys, config, "index", "build")[0] == 0
    assert not (config.parent / "index").exists()  # nothing but the Milvus file
    assert (config.parent / "milvus.db").is_file()
    code, out, _ = cli(capsys, config, "index", "list", "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    local = seeds_library.sources()
    assert code == 0 and [s["title"] for s in listed] == [s.title for s in local]
    assert [s["chunks"] for s in listed] == [s.chunks for s in local]
    code, out, _ = cli(capsys, config, "index", "stats", "--json")
    stats = json.loads(out)
    assert (stats["sources"], stats["chunks"]) == (len(local), sum(s.chunks for s in local))
    assert stats["vector_kind"] == "flat" and stats["bytes"] > 0
    code, out, err = cli(capsys, config, "index", "check")
    assert (code, out.strip(), err) == (0, "index is sound", "")
    for question in SEED_QUESTIONS[:4]:
        code, out, _ = cli(capsys, config, "search", question, "-k", "5", "--json")
        got = [(r["source"]["id"], r["start"], r["text"]) for r in json.loads(out)["results"]]
        want = [(h.source.id, h.chunk.start, h.chunk.text)
                for h in seeds_library.search(question, 5)]
        assert code == 0 and got == want, question
        code, out, _ = cli(capsys, config, "ask", question, "--json")
        got, want = json.loads(out), seeds_library.ask(question).to_json()
        # The same answer, quotes and sources; the learned scores may differ in the third
        # decimal (Milvus's candidate pool sets the features' "best candidate" scales).
        assert _without_scores(got) == _without_scores(want), question
        assert all(abs(a - b) < 0.01 for a, b in zip(_scores(got), _scores(want), strict=True))


def _without_scores(obj):
    if isinstance(obj, dict):
        return {k: _without_scores(v) for k, v in obj.items() if k != "score"}
    return [_without_scores(v) for v in obj] if isinstance(obj, list) else obj


def _scores(obj) -> list[float]:
    if isinstance(obj, dict):
        own = [obj["score"]] if "score" in obj else []
        return own + [x for v in obj.values() for x in _scores(v)]
    return [x for v in obj for x in _scores(v)] if isinstance(obj, list) else []


def test_updates_write_only_what_changed_and_a_rebuild_switches(capsys, config, tmp_path):
    note = tmp_path / "notes" / "owls.txt"
    note.parent.mkdir()
    note.write_text("The owl report\n\nSnowy owls nest on low hummocks of the tundra near "
                    "Tromso every spring.\n")
    assert cli(capsys, config, "index", "build")[0] == 0
    lib = app.make_library(load_config(config))
    before = lib.stats()
    report = lib.update([str(note)])
    assert report.added == [str(note)] and report.chunks_embedded == 1
    assert lib.search("where do snowy owls nest?", 1)[0].source.path == str(note)
    note.write_text(note.read_text() + "\nThey were counted by wardens in 2019.\n")
    report = lib.update([str(note)])
    assert report.changed == [str(note)] and lib.stats()["chunks"] == before["chunks"] + 1
    answer = lib.ask("when were the owls counted?")
    assert "2019" in answer.answer
    code, _, _ = cli(capsys, config, "index", "remove", str(note))
    assert code == 0 and lib.stats()["chunks"] == before["chunks"]
    assert all(s.path != str(note) for s in lib.sources())
    assert cli(capsys, config, "index", "check")[0] == 0
    assert lib.stats()["generation"] == before["generation"]  # updates stay in place
    assert cli(capsys, config, "index", "build", "--rebuild")[0] == 0
    after = lib.stats()
    assert after["generation"] != before["generation"] and after["chunks"] == before["chunks"]


def test_a_second_reader_sees_updates_at_once(capsys, config, tmp_path):
    """Two Libraries on one Milvus (two bot processes do the same against a server)."""
    assert cli(capsys, config, "index", "build")[0] == 0
    cfg = load_config(config)
    writer = app.make_library(cfg)
    reader = app.Library(Path("unused"), writer.embedder, writer.settings,
                         store=app.store_for(cfg))
    note = tmp_path / "herons.txt"
    note.write_text("Grey herons build their nests in tall trees in colonies called heronries.")
    writer.update([str(note)])
    assert reader.search("what are heronries?", 1)[0].source.path == str(note)
    writer.remove([str(note)])
    assert all(h.source.path != str(note) for h in reader.search("what are heronries?", 3))


def test_bad_store_settings_are_one_line_errors(capsys, tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text('[store]\nbackend = "cassandra"\n')
    code, _, err = run_cli(capsys, "--config", bad, "index", "list")
    assert code == 1 and err.count("\n") == 1 and "store.backend" in err
    bad.write_text('[store]\nbackend = "milvus"\nuri = "http://127.0.0.1:9"\n')
    code, _, err = run_cli(capsys, "--config", bad, "index", "list")
    assert code == 1 and err.count("\n") == 1 and "cannot reach the index's Milvus" in err


def test_pymilvus_is_imported_only_for_the_milvus_backend():
    """--help and the local store never load pymilvus (its import costs a second)."""
    import subprocess
    import sys

    from .conftest import ROOT

    code = ("import sys, contextlib, io\n"
            "from bot.cli import main\n"
            "from bot.app import make_library, store_for\n"
            "from bot.config import Config\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['--help'])\n"
            "assert store_for(Config()) is None\n"
            "print(sorted(m for m in sys.modules if m.startswith(('pymilvus', 'milvus'))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
