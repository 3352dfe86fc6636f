"""The library's public API: bot/ imports only what `index` exports, and index/ never bot/."""

from __future__ import annotations

import ast
import subprocess
import sys

import index

from .conftest import ROOT


def _imports(path):
    """(module, names) for every import statement of a file, nested ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, tuple(a.name for a in node.names)


def test_bot_imports_only_the_public_api_of_index():
    files = sorted((ROOT / "bot").glob("*.py"))
    assert len(files) > 5
    wrong = []
    for path in files:
        for module, names in _imports(path):
            top = module.split(".")[0]
            if top != "index":
                continue
            if module != "index" or not names:
                wrong.append(f"{path.name}: {module} (import from `index` itself)")
            wrong += [f"{path.name}: index.{n} is not in index.__all__" for n in names
                      if n not in index.__all__]
    assert not wrong, "\n".join(wrong)


def test_index_never_imports_the_interfaces():
    for path in sorted((ROOT / "index").glob("*.py")):
        for module, _ in _imports(path):
            assert module.split(".")[0] not in ("bot", "discord", "tqdm"), (path.name, module)


def test_every_exported_name_resolves():
    for name in index.__all__:
        assert getattr(index, name) is not None, name
    assert isinstance(index.IndexCorrupt("x"), index.CitebotError)
    assert callable(index.evaluate_questions) and callable(index.setting)


def test_importing_an_error_or_asking_for_help_loads_no_faiss_or_numpy():
    """Names load on first use: the CLI's error handling and --help stay light."""
    probe = ("import sys\nfrom index import CitebotError, IndexCorrupt\n"
             "from bot.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('faiss', 'numpy', 'torch') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "[]", (res.stdout[-300:], res.stderr[-500:])
