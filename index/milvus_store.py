"""The index in Milvus: chunk rows, vectors, BM25 and sentences in the engine, no local files.

Why this layout:
- One generation is four collections named `{name}_{gen}_{kind}`: `chunks` (text, source,
  offsets, hash, the dense vector, and a BM25 sparse vector that Milvus's own full-text
  function derives from a VARCHAR), `sentences` (spans and half-precision vectors of each
  chunk's quotable sentences, read by chunk id, never searched), `sources` (the source
  records) and `terms` (how many chunks hold each stem and each surface word: what the answer's
  unknown-word rule and spelling correction read, which Milvus does not expose).
- BM25 runs on the text citebot's own tokenizer made (stems, stop words out, given names
  added; see lexical.py) under a whitespace analyzer, so Milvus scores the same terms as the
  local store does; Milvus keeps the statistics (document count, average length, document
  frequencies) current under inserts and deletes.
- Updates are upserts and deletes of what changed: a source's unchanged chunks keep their
  ids (a hash of source, offset and text), so they are neither rewritten nor re-embedded.
  Readers see such an update row by row (sources and sentences are written before the chunks
  that lead to them, and chunks deleted before what they lead to), not as a whole.
- A rebuild fills a new generation and then switches the pointer to it at once: on a server,
  the alias `{name}` of the chunks collection (`alter_alias`, atomic in Milvus); on Milvus Lite,
  which has no aliases, a record in `{name}_meta` that citebot switches itself. Either way
  readers resolve the pointer once per question and read one generation throughout.
- Every Milvus collection needs a vector field: `sources`, `terms` and `meta` carry a
  two-dimensional zero placeholder.

The same pymilvus code serves Milvus Lite (`uri` a file path: one process at a time, FLAT
or IVF_FLAT only) and a server or cluster (`uri` http://host:19530).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CitebotError, IndexCorrupt, IndexNotFound, StoreUnavailable
from .lexical import given_names, lexical_text, surface_words, tokenize
from .records import Chunk, Source
from .store import ChunkSentences, Manifest, SourceRows, now_iso

KINDS = ("chunks", "sentences", "sources", "terms")
MAX_TEXT = 65_535  # Milvus's VARCHAR limit, in bytes
_QUERY_WINDOW = 16_384  # Milvus's most rows of one query
BATCH = 512  # rows per insert: a few MB, far below gRPC's message limit
_PLACEHOLDER = [0.0, 0.0]
_SOURCE_FIELDS = ("id", "title", "path", "url", "publisher", "date", "content_hash", "added_at")
_CHUNK_FIELDS = ("source_id", "text", "start", "end", "hash")
_REQUIRED = ("id", "title", "content_hash", "chunks")  # the others are None when empty
# Dense index per deployment: Lite offers only FLAT, IVF_FLAT and AUTOINDEX; exact FLAT keeps
# parity with the local store. A server gets a graph by default.
_INDEX_PARAMS = {"FLAT": {}, "IVF_FLAT": {"nlist": 1024}, "IVF_SQ8": {"nlist": 4096},
                 "HNSW": {"M": 24, "efConstruction": 200}, "DISKANN": {}, "AUTOINDEX": {}}


def is_lite(uri: str) -> bool:
    """Whether uri names a Milvus Lite file rather than a server."""
    return "://" not in uri


def _client(uri: str, token: str):
    try:
        with warnings.catch_warnings():  # milvus-lite 2.5 imports the deprecated pkg_resources
            warnings.simplefilter("ignore", UserWarning)
            from pymilvus import MilvusClient

            if is_lite(uri):
                Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
            return MilvusClient(uri=str(Path(uri).expanduser()) if is_lite(uri) else uri,
                                token=token)
    except ImportError as exc:
        raise CitebotError("the milvus store backend needs its extra: "
                           "pip install 'citebot[milvus]'") from exc
    except Exception as exc:  # pymilvus raises MilvusException or a plain one when unreachable
        raise StoreUnavailable(f"cannot reach Milvus at {uri}: {exc}") from exc


def chunk_id(source_id: str, start: int, text_hash: str) -> int:
    """A stable 63-bit primary key: the same chunk of the same source keeps its row."""
    digest = hashlib.blake2b(f"{source_id}\0{start}\0{text_hash}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


def bm25_terms(text: str) -> str:
    """What the BM25 field holds (and a query is searched as): citebot's tokens, spaced."""
    return " ".join(tokenize(text))


@dataclass(frozen=True)
class Candidates:
    """Chunks found by dense or BM25 search, each with its exact cosine and its BM25 score."""

    ids: np.ndarray  # int64
    dense: np.ndarray  # float32
    lexical: np.ndarray  # float32, 0 where no query term occurs


class MilvusStore:
    """One citebot index in a Milvus: its generations and the pointer to the live one."""

    def __init__(self, uri: str, *, name: str = "citebot", token: str = "",
                 index_type: str = "auto") -> None:
        if not name.isidentifier():
            raise CitebotError(f"store collection name {name!r} must be letters, digits and _")
        self.uri, self.name = uri, name
        self.lite = is_lite(uri)
        index_type = index_type.upper()
        if index_type == "AUTO":
            index_type = "FLAT" if self.lite else "HNSW"
        if index_type not in _INDEX_PARAMS:
            raise CitebotError(f"unknown Milvus index type {index_type!r}; "
                               f"known: {', '.join(_INDEX_PARAMS)}")
        self.index_type = index_type
        self.client = _client(uri, token)
        self._loaded: set[str] = set()
        self._open: dict[str, Generation] = {}
        self._closed = False

    # -- the pointer ---------------------------------------------------------------------

    @property
    def _meta(self) -> str:
        return f"{self.name}_meta"

    def live(self) -> str | None:
        """The live generation's name ("g000003"), or None when there is no index."""
        if self.lite:
            rows = self._meta_get("live")
            return rows or None
        try:
            target = self.client.describe_alias(alias=self.name)["collection_name"]
        except Exception:  # pymilvus: MilvusException "alias not found"
            return None
        return target[len(self.name) + 1:].removesuffix("_chunks")

    def _switch(self, gen: str) -> None:
        if self.lite:
            self._meta_put("live", gen)
            return
        target = self._collection(gen, "chunks")
        if any(a == self.name for a in self.client.list_aliases(target).get("aliases", [])):
            return
        try:
            self.client.alter_alias(collection_name=target, alias=self.name)
        except Exception:  # no alias yet: the first build
            self.client.create_alias(collection_name=target, alias=self.name)

    def _meta_get(self, key: str) -> str:
        if not self.client.has_collection(self._meta):
            return ""
        self._load(self._meta)
        rows = self.client.query(self._meta, ids=[key], output_fields=["value"])
        return rows[0]["value"] if rows else ""

    def _meta_put(self, key: str, value: str) -> None:
        if not self.client.has_collection(self._meta):
            schema = self._schema()
            schema.add_field("key", _dt().VARCHAR, is_primary=True, max_length=256)
            schema.add_field("value", _dt().VARCHAR, max_length=MAX_TEXT)
            self._create(self._meta, schema, {})
        self.client.upsert(self._meta, [{"key": key, "value": value, "_": _PLACEHOLDER}])

    # -- generations ---------------------------------------------------------------------

    def _collection(self, gen: str, kind: str) -> str:
        return f"{self.name}_{gen}_{kind}"

    def generations(self) -> list[str]:
        """Every generation with collections in the engine, oldest first."""
        prefix = f"{self.name}_g"
        return sorted({n[len(self.name) + 1:].split("_")[0]
                       for n in self.client.list_collections() if n.startswith(prefix)})

    def open(self, expected: Manifest | None = None) -> Generation:
        """The live generation, refusing one built with other settings."""
        gen = self.live()
        if gen is None:
            raise IndexNotFound(f"no index in Milvus at {self.uri} ({self.name}): build one "
                                f"with `citebot index build`")
        return self.generation(gen, expected)

    def generation(self, gen: str, expected: Manifest | None = None) -> Generation:
        """A generation by name, opened once per process."""
        if gen not in self._open:
            raw = self._meta_get(f"manifest:{gen}")
            try:
                manifest = Manifest(**json.loads(raw))
            except (ValueError, TypeError) as exc:
                raise IndexCorrupt(f"generation {gen} in Milvus has no sound manifest: "
                                   f"rebuild with `citebot index build --rebuild`") from exc
            for kind in KINDS:
                self._load(self._collection(gen, kind))
            self._open[gen] = Generation(self, gen, manifest)
        if expected is not None:
            self._open[gen].manifest.check_compatible(expected)
        return self._open[gen]

    def create(self, manifest: Manifest) -> Generation:
        """A new, empty generation (not live until publish)."""
        numbers = [int(g[1:]) for g in self.generations() if g[1:].isdigit()]
        gen = f"g{max(numbers, default=0) + 1:06d}"
        manifest = Manifest(**{**asdict(manifest), "vector_kind": self.index_type.lower(),
                               "created_at": now_iso()})
        dim = manifest.dim
        dt = _dt()
        chunks = self._schema(placeholder=False)
        chunks.add_field("id", dt.INT64, is_primary=True)
        chunks.add_field("source_id", dt.VARCHAR, max_length=512)
        chunks.add_field("start", dt.INT64)
        chunks.add_field("end", dt.INT64)
        chunks.add_field("hash", dt.VARCHAR, max_length=128)
        chunks.add_field("text", dt.VARCHAR, max_length=MAX_TEXT)
        chunks.add_field("terms", dt.VARCHAR, max_length=MAX_TEXT, enable_analyzer=True,
                         analyzer_params={"tokenizer": "whitespace"})
        chunks.add_field("sparse", dt.SPARSE_FLOAT_VECTOR)
        chunks.add_field("vector", dt.FLOAT_VECTOR, dim=dim)
        from pymilvus import Function, FunctionType

        chunks.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                     input_field_names=["terms"],
                                     output_field_names=["sparse"]))
        self._create(self._collection(gen, "chunks"), chunks, {
            "vector": (self.index_type, "IP", _INDEX_PARAMS[self.index_type]),
            # k1 and b as the local store's bm25s index
            "sparse": ("SPARSE_INVERTED_INDEX", "BM25", {"bm25_k1": 1.2, "bm25_b": 0.75})})
        sentences = self._schema(auto_id=True, placeholder=False)
        sentences.add_field("id", dt.INT64, is_primary=True)
        sentences.add_field("chunk_id", dt.INT64)
        sentences.add_field("source_id", dt.VARCHAR, max_length=512)
        sentences.add_field("start", dt.INT64)
        sentences.add_field("end", dt.INT64)
        sentences.add_field("vector", dt.FLOAT16_VECTOR, dim=dim)
        self._create(self._collection(gen, "sentences"), sentences,
                     {"vector": ("FLAT", "IP", {})})
        sources = self._schema()
        for field in _SOURCE_FIELDS:
            sources.add_field(field, dt.VARCHAR, max_length=4096, is_primary=field == "id")
        sources.add_field("chunks", dt.INT64)
        self._create(self._collection(gen, "sources"), sources, {})
        terms = self._schema()
        terms.add_field("term", dt.VARCHAR, is_primary=True, max_length=512)
        terms.add_field("chunks", dt.INT64)
        self._create(self._collection(gen, "terms"), terms, {})
        self._meta_put(f"manifest:{gen}", json.dumps(asdict(manifest)))
        self._open[gen] = Generation(self, gen, manifest)
        return self._open[gen]

    def publish(self, gen: str) -> None:
        """Make gen the live generation, then drop all but it and the one it replaced."""
        previous = self.live()
        self._switch(gen)
        for old in self.generations():
            if old not in (gen, previous):
                self.drop(old)

    def drop(self, gen: str) -> None:
        for kind in KINDS:
            name = self._collection(gen, kind)
            if self.client.has_collection(name):
                self.client.drop_collection(name)
            self._loaded.discard(name)
        self._open.pop(gen, None)

    def close(self) -> None:
        """Disconnect; on Lite also stop this process's engine, so another process may open
        the file (Milvus Lite lets one process at a time hold it)."""
        if self._closed:
            return
        self._closed = True
        self.client.close()
        if self.lite:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(Path(self.uri).expanduser()))

    # -- helpers -------------------------------------------------------------------------

    def _schema(self, *, auto_id: bool = False, placeholder: bool = True):
        from pymilvus import MilvusClient

        schema = MilvusClient.create_schema(auto_id=auto_id, enable_dynamic_field=False)
        if placeholder:
            schema.add_field("_", _dt().FLOAT_VECTOR, dim=len(_PLACEHOLDER))
        return schema

    def _create(self, name: str, schema, indexes: dict[str, tuple[str, str, dict]]) -> None:
        params = self.client.prepare_index_params()
        indexes = indexes or {"_": ("FLAT", "L2", {})}
        for field, (kind, metric, extra) in indexes.items():
            params.add_index(field, index_type=kind, metric_type=metric, params=extra)
        if self.client.has_collection(name):
            self.client.drop_collection(name)  # a leftover of a killed rebuild
        # Strong: a question asked right after an update, from any process, sees it.
        self.client.create_collection(name, schema=schema, index_params=params,
                                      consistency_level="Strong")
        self._loaded.add(name)

    def _load(self, name: str) -> None:
        if name in self._loaded:
            return
        if not self.client.has_collection(name):
            raise IndexCorrupt(f"the Milvus collection {name} is missing: rebuild with "
                               f"`citebot index build --rebuild`")
        self.client.load_collection(name)
        self._loaded.add(name)


def _dt():
    from pymilvus import DataType

    return DataType


def _batches(rows: Sequence[dict], size: int = BATCH) -> Iterator[Sequence[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _in(field: str, values: Iterable[Any]) -> str:
    return f"{field} in {json.dumps(list(values))}"


class Generation:
    """One generation's collections: what answering reads and what an update writes."""

    def __init__(self, store: MilvusStore, gen: str, manifest: Manifest) -> None:
        self.store, self.gen, self.manifest = store, gen, manifest
        self.client = store.client
        self.names = {kind: store._collection(gen, kind) for kind in KINDS}

    @property
    def generation(self) -> str:
        return self.gen

    def _query(self, kind: str, expr: str, fields: list[str]) -> list[dict]:
        """Every row matching expr, however many (one query returns at most 16,384)."""
        rows = self.client.query(self.names[kind], filter=expr, output_fields=fields,
                                 limit=_QUERY_WINDOW)
        if len(rows) < _QUERY_WINDOW:
            # pymilvus fills vector fields in lazily by position: copy before any reordering.
            return [dict(r) for r in rows]
        it = self.client.query_iterator(self.names[kind], filter=expr, output_fields=fields,
                                        batch_size=4096)
        out: list[dict] = []
        try:
            while batch := it.next():
                out.extend(batch)
        finally:
            it.close()
        return out

    # -- reading -------------------------------------------------------------------------

    def count(self, kind: str = "chunks") -> int:
        rows = self.client.query(self.names[kind], filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def sources(self, ids: Iterable[str] | None = None) -> dict[str, Source]:
        """Source records by id: the given ones, or all."""
        expr = 'id != ""' if ids is None else _in("id", sorted(set(ids)))
        rows = self._query("sources", expr, [*_SOURCE_FIELDS, "chunks"])
        found = [Source(**{f: r[f] if f in _REQUIRED else r[f] or None
                           for f in (*_SOURCE_FIELDS, "chunks")}) for r in rows]
        found.sort(key=lambda s: (s.added_at or "", s.path or "", s.url or ""))
        return {s.id: s for s in found}

    def chunks(self, ids: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by id."""
        if not ids:
            return {}
        rows = self.client.query(self.names["chunks"], ids=[int(i) for i in ids],
                                 output_fields=list(_CHUNK_FIELDS))
        return {r["id"]: _chunk(r) for r in rows}

    def source_chunks(self, source_id: str) -> list[Chunk]:
        """A source's chunks in text order."""
        return [_chunk(r) for r in self._source_rows(source_id)]

    def _source_rows(self, source_id: str, extra: Sequence[str] = ()) -> list[dict]:
        rows = self._query("chunks", f"source_id == {json.dumps(source_id)}",
                           [*_CHUNK_FIELDS, *extra])
        return sorted(rows, key=lambda r: r["start"])

    def embeddings(self, ids: Sequence[int]) -> np.ndarray:
        """Stored vectors of the given chunk ids, in that order."""
        if not ids:
            return np.zeros((0, self.manifest.dim), dtype=np.float32)
        rows = self.client.query(self.names["chunks"], ids=[int(i) for i in ids],
                                 output_fields=["vector"])
        got = {r["id"]: r["vector"] for r in rows}
        return np.asarray([got[int(i)] for i in ids], dtype=np.float32)

    def sentences(self, ids: Sequence[int]) -> dict[int, ChunkSentences]:
        """The stored sentences of the given chunk ids (none for a chunk of short lines)."""
        if not len(ids):
            return {}
        rows = self._query("sentences", _in("chunk_id", [int(i) for i in ids]),
                           ["chunk_id", "start", "end", "vector"])
        rows.sort(key=lambda r: (r["chunk_id"], r["start"]))
        dim = self.manifest.dim
        spans: dict[int, list[tuple[int, int]]] = {}
        blobs: dict[int, list[bytes]] = {}
        for r in rows:
            spans.setdefault(r["chunk_id"], []).append((r["start"], r["end"]))
            blobs.setdefault(r["chunk_id"], []).append(_float16_bytes(r["vector"]))
        empty = ChunkSentences((), np.zeros((0, dim), dtype=np.float32))
        out = {int(i): empty for i in ids}
        for cid, parts in blobs.items():
            vecs = np.frombuffer(b"".join(parts), dtype=np.float16).reshape(len(parts), dim)
            out[cid] = ChunkSentences(tuple(spans[cid]), vecs.astype(np.float32))
        return out

    def term_counts(self, terms: list[str]) -> dict[str, int]:
        if not terms:
            return {}
        rows = self.client.query(self.names["terms"], ids=terms, output_fields=["chunks"])
        return {r["term"]: int(r["chunks"]) for r in rows}

    def word_counts(self, words: list[str]) -> dict[str, int]:
        """How many chunks hold each of the given lower-cased words (unknown ones left out)."""
        got = self.term_counts([f"w:{w}" for w in words])
        return {k[2:]: v for k, v in got.items()}

    def knows(self, word: str) -> bool:
        """Whether some chunk holds the word in some form (the same stem)."""
        stems = tokenize(word)
        return bool(stems) and len(self.term_counts([f"s:{t}" for t in stems])) == len(set(stems))

    def doc_freqs(self, stems: list[str]) -> np.ndarray:
        """How many chunks hold each stem (0 for a stem no chunk holds)."""
        got = self.term_counts([f"s:{t}" for t in stems])
        return np.array([got.get(f"s:{t}", 0) for t in stems], dtype=np.int64)

    @property
    def n_docs(self) -> int:
        return self.count()

    def candidates(self, query: str, qvec: np.ndarray, pool: int) -> Candidates:
        """The pool best chunks by dense and by BM25 search, with both scores for each."""
        chunks = self.names["chunks"]
        qvec = np.asarray(qvec, dtype=np.float32)
        dense_hits = self.client.search(chunks, data=[qvec.tolist()], anns_field="vector",
                                        limit=pool, search_params=self._dense_params(pool))[0]
        terms = bm25_terms(query)
        lex: dict[int, float] = {}
        if terms:
            lex = self._bm25(terms, pool)
        ids = np.unique(np.array([h["id"] for h in dense_hits] + list(lex), dtype=np.int64))
        missing = [int(i) for i in ids if int(i) not in lex]
        if terms and missing:  # dense-only candidates may still hold a query term
            lex.update(self._bm25(terms, len(missing), _in("id", missing)))
        # Exact cosines from the stored vectors, whatever approximate index found them.
        dense = self.embeddings(ids.tolist()) @ qvec if len(ids) else np.zeros(0, np.float32)
        return Candidates(ids, dense.astype(np.float32),
                          np.array([lex.get(int(i), 0.0) for i in ids], dtype=np.float32))

    def _bm25(self, terms: str, limit: int, expr: str = "") -> dict[int, float]:
        hits = self.client.search(self.names["chunks"], data=[terms], anns_field="sparse",
                                  limit=limit, filter=expr,
                                  search_params={"metric_type": "BM25"})[0]
        return {int(h["id"]): float(h["distance"]) for h in hits if h["distance"] > 0}

    def _dense_params(self, pool: int) -> dict:
        extra = {"HNSW": {"ef": max(2 * pool, 64)}, "IVF_FLAT": {"nprobe": 64},
                 "IVF_SQ8": {"nprobe": 64}, "DISKANN": {"search_list": max(2 * pool, 100)}}
        return {"metric_type": "IP", "params": extra.get(self.store.index_type, {})}

    # -- writing -------------------------------------------------------------------------

    def put(self, rows: SourceRows, embeddings: np.ndarray,
            sentences: Sequence[ChunkSentences]) -> None:
        """Write a source and its chunks, replacing what the generation held of it.

        embeddings and sentences have one entry per chunk of rows. Chunks the source already
        had (same offset and text) keep their rows; only new ones are written, gone ones
        deleted.
        """
        s = rows.source
        old = {r["id"]: r for r in self._source_rows(s.id, ["terms"])}
        self.client.upsert(self.names["sources"], [{
            **{f: (getattr(s, f) or "") for f in _SOURCE_FIELDS},
            "added_at": s.added_at or now_iso(), "chunks": len(rows.chunks),
            "_": _PLACEHOLDER}])
        names = given_names(rows.text)
        new_rows, new_sentences = [], []
        for c, vec, sent in zip(rows.chunks, embeddings, sentences, strict=True):
            cid = chunk_id(s.id, c.start, c.hash)
            if old.pop(cid, None) is not None:
                continue
            new_rows.append({"id": cid, "source_id": s.id, "start": c.start, "end": c.end,
                             "hash": c.hash, "text": c.text,
                             "terms": bm25_terms(lexical_text(c.text, names)),
                             "vector": np.asarray(vec, dtype=np.float32).tolist()})
            new_sentences += [{"chunk_id": cid, "source_id": s.id, "start": a, "end": b,
                               "vector": v.astype(np.float16)}
                              for (a, b), v in zip(sent.spans, sent.vectors, strict=True)]
        for batch in _batches(new_sentences):
            self.client.insert(self.names["sentences"], list(batch))
        for batch in _batches(new_rows):
            self.client.upsert(self.names["chunks"], list(batch))
        self._delete_chunks(list(old))
        self._count_terms(new_rows, +1)
        self._count_terms(list(old.values()), -1)

    def remove(self, source_id: str) -> None:
        """Delete a source, its chunks and their sentences."""
        gone = self._source_rows(source_id, ["terms"])
        self._delete_chunks([r["id"] for r in gone])
        self.client.delete(self.names["sources"], ids=[source_id])
        self._count_terms(gone, -1)

    def _delete_chunks(self, ids: list[int]) -> None:
        for i in range(0, len(ids), BATCH):
            part = ids[i:i + BATCH]
            self.client.delete(self.names["chunks"], ids=part)
            self.client.delete(self.names["sentences"], filter=_in("chunk_id", part))

    def _count_terms(self, rows: list[dict], sign: int) -> None:
        """Move the stem and word counts by the given chunk rows' terms and words."""
        if not rows:
            return
        delta: Counter[str] = Counter()
        for r in rows:
            delta.update(f"s:{t}" for t in set(r["terms"].split()))
        delta.update({f"w:{w}": n for w, n in surface_words([r["text"] for r in rows]).items()})
        keys = sorted(delta)
        now: dict[str, int] = {}
        for i in range(0, len(keys), 4096):
            now.update(self.term_counts(keys[i:i + 4096]))
        keep, drop = [], []
        for key in keys:
            n = now.get(key, 0) + sign * delta[key]
            if n > 0:
                keep.append({"term": key, "chunks": n, "_": _PLACEHOLDER})
            else:
                drop.append(key)
        for batch in _batches(keep, 4096):
            self.client.upsert(self.names["terms"], list(batch))
        for i in range(0, len(drop), 4096):
            self.client.delete(self.names["terms"], ids=drop[i:i + 4096])


def _chunk(row: dict) -> Chunk:
    return Chunk(source_id=row["source_id"], text=row["text"], start=row["start"],
                 end=row["end"], hash=row["hash"], id=row["id"])


def _float16_bytes(value: Any) -> bytes:
    """pymilvus returns a FLOAT16_VECTOR field as a list holding one bytes object."""
    return value[0] if isinstance(value, list) else bytes(value)
