"""The update rules, as a pure plan: which sources are added, changed, unchanged, removed or
duplicates, and which chunks need embedding, decided from source records alone.

No model, no store and no files are touched here (same_file_key resolves paths, nothing more),
so every rule is testable on plain records. The indexed sources are asked one question at a
time through a SourceLookup (by id, by resolved path or URL, by content hash): the store
answers each from an index, so planning an update of one file reads a few records however
many sources the index holds, and a build from 100,000 files does 100,000 lookups, not
100,000² comparisons. RecordLookup answers from records in memory (tests, small stores).
The planner keeps only what this plan changes (its new, changed and dropped records) and
sees the store through them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from . import ingest
from .errors import CitebotError
from .paths import key_within, same_file_key
from .records import Chunk, Source


class SourceLookup(Protocol):
    """The indexed sources, one question at a time; ids are those of indexed sources."""

    def get(self, sid: str) -> Source | None: ...
    def by_file_key(self, key: str) -> list[str]: ...
    def by_hash(self, content_hash: str) -> list[str]: ...
    def by_url(self, url: str) -> list[str]: ...
    def within(self, folder: str) -> list[str]:
        """Sources whose stored file key names the (resolved) folder or a file inside it."""
    def count(self) -> int: ...


class RecordLookup:
    """A SourceLookup over records in memory, with dict tables for every question."""

    def __init__(self, records: Mapping[str, Source],
                 file_keys: Mapping[str, str] | None = None) -> None:
        """file_keys: same_file_key of the sources by id, as stored (computed if absent)."""
        self.records = dict(records)
        keys = file_keys or {}
        self.keys = {s.id: k for s in self.records.values()
                     if (k := keys.get(s.id) or same_file_key(s))}
        self._tables: dict[str, dict[str, list[str]]] = {"file": {}, "hash": {}, "url": {}}
        for s in self.records.values():
            for table, key in (("file", self.keys.get(s.id)), ("hash", s.content_hash),
                               ("url", s.url)):
                if key:
                    self._tables[table].setdefault(key, []).append(s.id)

    def get(self, sid: str) -> Source | None:
        return self.records.get(sid)

    def by_file_key(self, key: str) -> list[str]:
        return self._tables["file"].get(key, [])

    def by_hash(self, content_hash: str) -> list[str]:
        return self._tables["hash"].get(content_hash, [])

    def by_url(self, url: str) -> list[str]:
        return self._tables["url"].get(url, [])

    def within(self, folder: str) -> list[str]:
        return [sid for sid, k in self.keys.items() if key_within(k, folder)]

    def count(self) -> int:
        return len(self.records)


@dataclass
class UpdatePlan:
    """What an update will do. added/changed hold the records to index (ids kept for a file
    spelled another way), removed the old records whose chunks go."""

    added: list[Source] = field(default_factory=list)
    changed: list[Source] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[Source] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    @property
    def dropped_ids(self) -> list[str]:
        """Sources whose stored chunks go: the removed and the changed ones."""
        return [s.id for s in self.removed] + [s.id for s in self.changed]


class Planner:
    """Builds an UpdatePlan from the indexed sources and the sources an update offers."""

    def __init__(self, indexed: SourceLookup | Mapping[str, Source], now: str,
                 file_keys: Mapping[str, str] | None = None) -> None:
        """indexed: a lookup, or the records themselves (file_keys as RecordLookup takes)."""
        self.lookup: SourceLookup = RecordLookup(indexed, file_keys) \
            if isinstance(indexed, Mapping) else indexed
        self.now = now
        self.plan = UpdatePlan()
        self._mine: dict[str, Source | None] = {}  # this plan's records; None: dropped
        self._keys: dict[str, str] = {}  # same_file_key of the sources this plan indexes
        self._new_by_file: dict[str, str] = {}
        self._new_by_hash: dict[str, str] = {}
        self._delta = 0  # sources added less sources dropped

    def current(self, sid: str) -> Source | None:
        """A source's record as this plan leaves it (None: not indexed, or dropped)."""
        return self._mine[sid] if sid in self._mine else self.lookup.get(sid)

    def sources_left(self) -> int:
        """How many sources the index holds once the plan is applied."""
        return self.lookup.count() + self._delta

    def _live(self, ids: Iterable[str]) -> list[Source]:
        return [s for sid in ids if (s := self.current(sid)) is not None]

    def _by_file(self, key: str) -> Source | None:
        stored = self._live(self.lookup.by_file_key(key))
        if stored:
            return stored[-1]
        sid = self._new_by_file.get(key)
        return self.current(sid) if sid else None

    def _by_hash(self, content_hash: str) -> Source | None:
        sid = self._new_by_hash.get(content_hash)
        ids = ([sid] if sid else []) + self.lookup.by_hash(content_hash)
        return next((s for s in self._live(ids) if s.content_hash == content_hash), None)

    def _drop(self, sid: str) -> None:
        src = self.current(sid)
        if src is None:
            return
        self._mine[sid] = None
        self._delta -= 1
        self.plan.removed.append(src)

    def _mine_where(self, keep) -> list[str]:
        return [sid for sid, s in self._mine.items() if s is not None and keep(sid, s)]

    def remove(self, spec: str) -> None:
        """Drop the sources a remove argument names: id, path, URL, or a folder holding them."""
        if ingest.is_web_url(spec):
            gone = self.lookup.by_url(spec) + self._mine_where(lambda _, s: s.url == spec)
        else:  # resolved once; each source's resolved path was stored when it was indexed
            folder = os.path.realpath(spec)
            gone = ([spec] if self.current(spec) else []) + self.lookup.within(folder) + \
                self._mine_where(lambda sid, _: key_within(self._keys.get(sid), folder))
        gone = [s.id for s in self._live(dict.fromkeys(gone))]
        if not gone:
            raise CitebotError(f"{spec} is not in the index")
        for sid in gone:
            self._drop(sid)

    def prune(self, specs: Sequence[str], present: Iterable[str]) -> None:
        """Drop sources inside the given folders whose file is no longer there. "Inside" is
        the rule remove uses (resolved paths), so a source indexed under another spelling of
        the folder is pruned too, and one that is still there is not."""
        found = {"path:" + os.path.realpath(p) for p in present}
        for folder in dict.fromkeys(os.path.realpath(s) for s in specs if os.path.isdir(s)):
            inside = self.lookup.within(folder) + self._mine_where(
                lambda sid, _, f=folder: key_within(self._keys.get(sid), f))
            for src in self._live(dict.fromkeys(inside)):
                if same_file_key(src) not in found:
                    self._drop(src.id)

    def offer(self, src: Source) -> Source | None:
        """The record to index for a loaded source, or None when it is unchanged or a
        duplicate of another indexed source (noted in the plan either way)."""
        key = same_file_key(src)
        prev = self.current(src.id) or (self._by_file(key) if key else None)
        if prev and prev.id != src.id:
            # The same file spelled another way ("seeds" vs "/repo/seeds"): keep its id.
            src = replace(src, id=prev.id, path=prev.path)
        if prev and prev.content_hash == src.content_hash:
            self.plan.unchanged.append(src.location)
            return None
        twin = self._by_hash(src.content_hash)
        if twin is not None and twin.id != src.id:
            self.plan.duplicates.append((src.location, twin.location))
            return None
        src = replace(src, added_at=prev.added_at if prev else self.now)
        if prev:
            self.plan.changed.append(src)
        else:
            self.plan.added.append(src)
            self._delta += 1
        self._mine[src.id] = src
        self._new_by_hash[src.content_hash] = src.id
        if key:
            self._new_by_file.setdefault(key, src.id)
            self._keys.setdefault(src.id, key)
        return src


def chunks_to_embed(chunks: Sequence[Chunk], known: Iterable[str]) -> list[int]:
    """Positions of the chunks whose text the index holds no vectors for (by text hash)."""
    known = set(known)
    return [i for i, c in enumerate(chunks) if c.hash not in known]
