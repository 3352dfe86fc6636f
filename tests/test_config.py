"""The config file: every key declared once, documented in config.example.toml, and checked
at load (type, range, finiteness) with one line naming the key."""

from __future__ import annotations

import atexit
import dataclasses
import math
import re
import shutil
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from bot import config as config_module
from bot.config import SECTIONS, Config, library_settings, load_config
from index import AnswerSettings, CitebotError, Settings, check_setting, setting, setting_types

from .conftest import ROOT, run_cli

EXAMPLE = ROOT / "config.example.toml"

# Hypothesis caches examples and source constants under ./.hypothesis, some of it while pytest
# collects: a private temporary folder instead, removed when the run ends.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="citebot-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)


def _keys():
    """(section, key, field, type) for every key the config file accepts."""
    for section, cls in SECTIONS.items():
        types = setting_types(cls)
        for f in dataclasses.fields(cls):
            yield section, f.name, f, types[f.name]


def test_config_example_documents_every_key_with_its_default():
    """config.example.toml is the reference for the config: every key of every section, each
    at the value citebot uses when the key is left out, and each with a comment above it."""
    import tomllib

    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    defaults = Config()
    assert set(example) == set(SECTIONS)
    for section, key, f, _ in _keys():
        where = f"[{section}] {key}"
        want = getattr(getattr(defaults, section), key)
        doc = f.metadata.get("doc")
        assert key in example[section], (
            f"{where} is not documented: add `{key} = {_toml_value(want)}` under [{section}] in "
            f"config.example.toml, with a comment" + (f" ({doc})" if doc else ""))
        assert example[section][key] == want, where
        at = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key} ="))
        while re.match(r"\w+ =", lines[at - 1]):  # keys grouped under one comment
            at -= 1
        assert lines[at - 1].startswith("#"), f"{where} has no comment"
    for section, table in example.items():
        assert set(table) <= {f.name for f in dataclasses.fields(SECTIONS[section])}, section


def test_the_example_loads_as_the_defaults_and_reaches_the_library_unchanged():
    cfg = load_config(EXAMPLE)
    assert dataclasses.replace(cfg, base_dir=Path.cwd()) == Config()
    assert library_settings(cfg) == Settings()


def _another(f: dataclasses.Field, hint):
    """A valid value other than the field's default."""
    if hint is bool:
        return not f.default
    if hint is str:
        return next(c for c in f.metadata["choices"] if c != f.default)
    value = f.default + 1 if f.metadata.get("max") is None else f.default / 2
    return int(value) if hint is int else value


def test_every_library_setting_is_a_key_and_reaches_its_field(tmp_path):
    """Each leaf field of the library's settings is set by exactly one key; a changed value
    lands in that field and nowhere else."""
    base = library_settings(Config())
    seen = set()
    for k in config_module._library_keys():
        value = _another(k.field, k.hint)
        (tmp_path / "c.toml").write_text(f"[{k.section}]\n{k.name} = {_toml_value(value)}\n")
        diff = _diff(base, library_settings(load_config(tmp_path / "c.toml")))
        assert len(diff) == 1 and diff[0][1] == value, (k.section, k.name, diff)
        seen.add(diff[0][0])
    assert len(seen) == len(config_module._library_keys()) == len(_diff(base, None, every=True))
    assert {"max_query_chars", "answer.min_score", "retrieval.dense_weight"} <= seen


def _diff(a, b, prefix="", every=False):
    """(field path, b's value) for every leaf field of a settings record that b changes."""
    out = []
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name, None)
        if dataclasses.is_dataclass(x):
            out += _diff(x, y, f"{prefix}{f.name}.", every)
        elif every or x != y:
            out.append((prefix + f.name, y))
    return out


@dataclass(frozen=True)
class _Knobs:
    alpha: int = setting(3, min=1)
    beta: float = 0.5


@dataclass(frozen=True)
class _Outer:
    knobs: _Knobs = field(default_factory=_Knobs)
    gamma: str = setting("x", key="fetch.gamma")
    delta: bool = True


def test_a_new_field_of_a_settings_record_is_a_key_without_further_declaration():
    """The derivation is generic: a nested record is a section, a flat field names its key."""
    keys = {(k.section, k.name) for k in config_module._library_keys(_Outer)}
    assert keys == {("knobs", "alpha"), ("knobs", "beta"), ("fetch", "gamma"), ("index", "delta")}
    assert {f.name for f in dataclasses.fields(AnswerSettings)} <= \
        {f.name for f in dataclasses.fields(SECTIONS["answer"])}


def test_an_int_is_accepted_for_a_float_key_and_kept_as_float(tmp_path):
    (tmp_path / "c.toml").write_text("[retrieval]\ndense_weight = 1\n"
                                     "[conversation]\nidle_minutes = 3\n")
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.retrieval.dense_weight == 1.0 and isinstance(cfg.retrieval.dense_weight, float)
    assert isinstance(cfg.conversation.idle_minutes, float)


BAD = [
    ("retrieval", "k", "3.5", "whole number"),
    ("model", "batch_size", "-1", "1 to 4096"),
    ("chunking", "overlap_sentences", "-1", "0 to 100"),
    ("index", "sources", "[1, 2]", "list of strings"),
    ("retrieval", "dense_weight", "inf", "finite"),
    ("retrieval", "dense_weight", "nan", "finite"),
    ("retrieval", "dense_weight", "1.5", "0 to 1"),
    ("answer", "min_score", '"high"', "number"),
    ("answer", "max_question_chars", "0", "1 or more"),
    ("model", "backend", '"gpu"', "'onnx'"),
    ("model", "device", '"tpu"', "'cuda'"),
    ("index", "vector_kind", '"hnsw"', "'flat'"),
    ("index", "watch", '"yes"', "true or false"),
    ("discord", "allowed_channels", '["general"]', "list of whole numbers"),
    ("discord", "guild_id", "true", "whole number"),
    ("conversation", "idle_minutes", "0", "above 0"),
    ("fetch", "timeout", "-inf", "finite"),
    ("index", "dir", '"a\\u0000b"', "NUL"),
    ("index", "dir", '""', "non-empty"),
    ("index", "sources", '["seeds", ""]', "non-empty"),
]


@pytest.mark.parametrize(("section", "key", "value", "says"), BAD,
                         ids=[f"{s}.{k}={v}" for s, k, v, _ in BAD])
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, section, key, value, says):
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(CitebotError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"config key {section}.{key} should be" in message and says in message, message
    assert "\n" not in message


def test_a_bad_token_is_not_repeated(tmp_path):
    (tmp_path / "c.toml").write_text('[discord]\ntoken = ["MTIz.secret"]\n')
    with pytest.raises(CitebotError, match="discord.token") as caught:
        load_config(tmp_path / "c.toml")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("text", ["[answer]\nmin_scor = 0.5\n", "[answers]\nmin_score = 0.5\n",
                                  "answer = 3\n", "[answer.min_score]\nx = 1\n", "[index\n",
                                  "k = \"\\ud800\"\n"])
def test_unknown_keys_tables_and_bad_toml_are_one_line(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(CitebotError) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def test_the_cli_says_which_key_is_wrong_in_one_line(capsys, tmp_path):
    (tmp_path / "c.toml").write_text("[retrieval]\nk = 3.5\n")
    code, out, err = run_cli(capsys, "--config", tmp_path / "c.toml", "search", "Darroch",
                             "--index", tmp_path / "none")
    assert code == 1 and out == ""
    assert err.startswith("citebot: error: ") and err.count("\n") == 1
    assert "retrieval.k" in err and "Traceback" not in err


# -- any value at all: a valid Config or one CitebotError line -----------------------------------

def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")  # surrogates: invalid TOML, which is refused
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


_SCALARS = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["auto", "cpu", "onnx", "flat", "", "seeds", "\x00", "\u009b[2J"]),
    st.integers(min_value=-3, max_value=300), st.floats(min_value=-2, max_value=2))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=2), max_leaves=5)
_KEYS_OF = {section: [f.name for f in dataclasses.fields(cls)] for section, cls in SECTIONS.items()}


@st.composite
def _documents(draw) -> dict:
    sections = draw(st.lists(st.sampled_from(sorted(SECTIONS)) | st.text(max_size=6),
                             max_size=4, unique=True))
    doc = {}
    for section in sections:
        names = _KEYS_OF.get(section, ["k"])
        keys = draw(st.lists(st.sampled_from(names) | st.text(max_size=6), max_size=4,
                             unique=True))
        doc[section] = {key: draw(_VALUES) for key in keys}
    return doc


def _render(doc: dict) -> str:
    return "".join(f"[{_toml_string(section)}]\n"
                   + "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in table.items())
                   for section, table in doc.items())


def _valid(f: dataclasses.Field, hint, value) -> bool:
    """The oracle, written apart from index.settings: right type, finite, in range."""
    if typing.get_origin(hint) is list:
        item = typing.get_args(hint)[0]
        return isinstance(value, list) and all(_valid(f, item, v) for v in value)
    if hint in (int, float):
        meta = f.metadata
        return (type(value) is hint and math.isfinite(value)
                and value >= (meta.get("min", 0) if meta.get("min", 0) is not None else -math.inf)
                and value <= (meta.get("max") if meta.get("max") is not None else math.inf)
                and value > (meta.get("above") if meta.get("above") is not None else -math.inf))
    if hint is str:
        return (type(value) is str and "\x00" not in value
                and bool(value or f.metadata.get("empty", True))
                and value in (f.metadata.get("choices") or (value,)))
    return type(value) is hint


def _assert_valid(cfg: Config) -> None:
    for section, key, f, hint in _keys():
        value = getattr(getattr(cfg, section), key)
        assert _valid(f, hint, value), (section, key, value)
        assert check_setting(f, hint, value) == value, (section, key, value)
    library_settings(cfg)


def _load_or_one_line(path: Path):
    try:
        cfg = load_config(path)
    except CitebotError as exc:
        assert "\n" not in str(exc) and str(exc), repr(exc)
        return None
    _assert_valid(cfg)
    return cfg


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(doc=_documents())
def test_any_config_loads_valid_or_fails_in_one_line(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(_render(doc), encoding="utf-8")
    cfg = _load_or_one_line(path)
    if cfg is not None:  # what was given is what is kept
        for section, table in doc.items():
            for key, value in table.items():
                got = getattr(getattr(cfg, section), key)
                assert got == value or (isinstance(value, int) and got == float(value))


@settings(max_examples=100, deadline=None, database=None)
@given(data=st.binary(max_size=200))
def test_any_bytes_load_or_fail_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(data)
    _load_or_one_line(path)
