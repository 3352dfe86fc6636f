"""The update rules, as a pure plan: which sources are added, changed, unchanged, removed or
duplicates, and which chunks need embedding, decided from source records alone.

No model, no store and no files are touched here (same_file_key resolves paths, nothing more),
so every rule is testable on plain records. Every "is this source already indexed" question is
a dict lookup (by id, by resolved path or URL, by content hash): a build from 100,000 files does
100,000 lookups, not 100,000² comparisons.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from . import ingest
from .errors import CitebotError
from .paths import key_within, same_file_key, under_folders
from .records import Chunk, Source


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
    """Builds an UpdatePlan from the indexed records and the sources an update offers."""

    def __init__(self, indexed: Mapping[str, Source], now: str,
                 file_keys: Mapping[str, str] | None = None) -> None:
        """file_keys: same_file_key of indexed sources by id, as stored (computed if absent)."""
        self.kept: dict[str, Source] = dict(indexed)
        self.now = now
        self.plan = UpdatePlan()
        keys = file_keys or {}
        self._key = {s.id: k for s in self.kept.values()
                     if (k := keys.get(s.id) or same_file_key(s))}
        self._by_file = {k: sid for sid, k in self._key.items()}
        self._by_hash = {s.content_hash: s.id for s in self.kept.values()}

    def _drop(self, sid: str) -> None:
        src = self.kept.pop(sid)
        self.plan.removed.append(src)
        for table, key in ((self._by_file, self._key.get(sid)), (self._by_hash, src.content_hash)):
            if table.get(key) == sid:
                del table[key]

    def remove(self, spec: str) -> None:
        """Drop the sources a remove argument names: id, path, URL, or a folder holding them."""
        if ingest.is_web_url(spec):
            gone = [sid for sid, s in self.kept.items() if s.url == spec]
        else:  # resolved once; each source's resolved path was stored when it was indexed
            folder = os.path.realpath(spec)
            gone = [sid for sid in self.kept
                    if spec == sid or key_within(self._key.get(sid), folder)]
        if not gone:
            raise CitebotError(f"{spec} is not in the index")
        for sid in gone:
            self._drop(sid)

    def prune(self, specs: Sequence[str], present: Iterable[str]) -> None:
        """Drop sources under the given folders whose file is no longer there."""
        present = set(present)
        folders = [s for s in specs if os.path.isdir(s)]
        for sid in [sid for sid, s in self.kept.items() if under_folders(s.path, folders)]:
            if self.kept[sid].location not in present:
                self._drop(sid)

    def offer(self, src: Source) -> Source | None:
        """The record to index for a loaded source, or None when it is unchanged or a
        duplicate of another indexed source (noted in the plan either way)."""
        key = same_file_key(src)
        prev_id = src.id if src.id in self.kept else self._by_file.get(key) if key else None
        prev = self.kept.get(prev_id) if prev_id else None
        if prev and prev.id != src.id:
            # The same file spelled another way ("seeds" vs "/repo/seeds"): keep its id.
            src = replace(src, id=prev.id, path=prev.path)
        if prev and prev.content_hash == src.content_hash:
            self.plan.unchanged.append(src.location)
            return None
        twin_id = self._by_hash.get(src.content_hash)
        if twin_id is not None and twin_id != src.id:
            self.plan.duplicates.append((src.location, self.kept[twin_id].location))
            return None
        src = replace(src, added_at=prev.added_at if prev else self.now)
        if prev:
            if self._by_hash.get(prev.content_hash) == prev.id:
                del self._by_hash[prev.content_hash]
            self.plan.changed.append(src)
        else:
            self.plan.added.append(src)
        self.kept[src.id] = src
        self._by_hash[src.content_hash] = src.id
        if key:
            self._by_file.setdefault(key, src.id)
            self._key.setdefault(src.id, key)
        return src


def chunks_to_embed(chunks: Sequence[Chunk], known: Iterable[str]) -> list[int]:
    """Positions of the chunks whose text the index holds no vectors for (by text hash)."""
    known = set(known)
    return [i for i, c in enumerate(chunks) if c.hash not in known]

