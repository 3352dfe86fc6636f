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

About 400 lines: the schema, the pointer switch, the one-writer lease and check are one
design (above), split from what a generation reads and writes (milvus_generation.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .errors import CitebotError, IndexBusy, IndexCorrupt, IndexNotFound, StoreUnavailable
from .milvus_generation import KINDS, MAX_TEXT, PLACEHOLDER, SOURCE_FIELDS, Generation
from .plan import RecordLookup
from .store import ChunkSentences, Manifest, SourceRows, now_iso

# Dense index per deployment: Lite offers only FLAT, IVF_FLAT and AUTOINDEX; exact FLAT keeps
# parity with the local store. A server gets a graph by default.
_INDEX_PARAMS = {"FLAT": {}, "IVF_FLAT": {"nlist": 1024}, "IVF_SQ8": {"nlist": 4096},
                 "HNSW": {"M": 24, "efConstruction": 200}, "DISKANN": {}, "AUTOINDEX": {}}


_SCALAR = ("INVERTED", "", {})  # an index on a scalar field that filters look up


def is_lite(uri: str) -> bool:
    """Whether uri names a Milvus Lite file rather than a server."""
    return "://" not in uri


def _quiet_pymilvus() -> None:
    """pymilvus gives its loggers their own stderr handlers on import; the library prints
    nothing, so its records go up to the application's logging (the CLI's log file) instead."""
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


_LOG_LOCK = threading.Lock()


@contextmanager
def _lite_logs(path: Path) -> Iterator[None]:
    """Milvus Lite's engine, started by the client, writes its log files (glog) to /tmp by
    default, two more at every start; they go beside the file instead ("milvus.db.logs/"),
    unless GLOG_log_dir already says where. The engine reads the variable as it starts."""
    if "GLOG_log_dir" in os.environ:
        yield
        return
    logs = path.with_name(path.name + ".logs")
    logs.mkdir(exist_ok=True)
    with _LOG_LOCK:
        os.environ["GLOG_log_dir"] = str(logs)
        try:
            yield
        finally:
            os.environ.pop("GLOG_log_dir", None)


def _client(uri: str, token: str):
    try:
        with warnings.catch_warnings():  # milvus-lite 2.5 imports the deprecated pkg_resources
            warnings.simplefilter("ignore", UserWarning)
            from pymilvus import MilvusClient

            _quiet_pymilvus()
            if not is_lite(uri):
                return MilvusClient(uri=uri, token=token)
            path = Path(uri).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            with _lite_logs(path):
                return MilvusClient(uri=str(path), token=token)
    except ImportError as exc:
        raise CitebotError("the milvus store backend needs its extra: "
                           "pip install 'citebot[milvus]'") from exc
    except Exception as exc:  # pymilvus raises MilvusException or a plain one when unreachable
        detail = " ".join(str(exc).split())[:300]
        raise StoreUnavailable(f"cannot reach the index's Milvus: {detail}", path=uri) from exc


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
        self._writing = threading.Lock()

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
        self.client.upsert(self._meta, [{"key": key, "value": value, "_": PLACEHOLDER}])

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
            raise IndexNotFound(f"there is no index yet (collection {self.name})", path=self.uri)
        return self.generation(gen, expected)

    def generation(self, gen: str, expected: Manifest | None = None) -> Generation:
        """A generation by name, opened once per process."""
        if gen not in self._open:
            raw = self._meta_get(f"manifest:{gen}")
            try:
                manifest = Manifest(**json.loads(raw))
            except (ValueError, TypeError) as exc:
                raise IndexCorrupt(f"generation {gen} in Milvus has no sound manifest",
                                   path=self.uri) from exc
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
            "sparse": ("SPARSE_INVERTED_INDEX", "BM25", {"bm25_k1": 1.2, "bm25_b": 0.75}),
            # what updates look rows up by, so that no update scans the collection
            "source_id": _SCALAR, "hash": _SCALAR})
        sentences = self._schema(auto_id=True, placeholder=False)
        sentences.add_field("id", dt.INT64, is_primary=True)
        sentences.add_field("chunk_id", dt.INT64)
        sentences.add_field("source_id", dt.VARCHAR, max_length=512)
        sentences.add_field("start", dt.INT64)
        sentences.add_field("end", dt.INT64)
        sentences.add_field("vector", dt.FLOAT16_VECTOR, dim=dim)
        self._create(self._collection(gen, "sentences"), sentences,
                     {"vector": ("FLAT", "IP", {}), "chunk_id": _SCALAR, "source_id": _SCALAR})
        sources = self._schema()
        for field in SOURCE_FIELDS:
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

    @contextmanager
    def writer(self, manifest: Manifest, *, rebuild: bool = False,
               wait: bool = True) -> Iterator[MilvusWriter]:
        """A writer on the live generation, or, for a rebuild or a first build, on a new one
        that becomes live when the block ends without error (and is dropped otherwise).

        One writer at a time per process; Milvus Lite admits one process. On a server nothing
        stops two machines from updating at once: run updates from one place (see
        docs/scaling-milvus.md).
        """
        if not self._writing.acquire(blocking=wait):
            raise IndexBusy("another update of this index is running; try again when it has "
                            "finished")
        try:
            live = None if rebuild else self.live()
            if live is not None:
                yield MilvusWriter(self.generation(live, manifest), is_new=False)
                return
            gen = self.create(manifest)
            try:
                yield MilvusWriter(gen, is_new=True)
                # A Strong read waits until the engine serves every write made so far, so
                # no reader of the new generation can miss the end of the rebuild.
                self.client.query(gen.names["chunks"], filter="", output_fields=["count(*)"],
                                  consistency_level="Strong")
            except BaseException:
                self.drop(gen.gen)
                raise
            self.publish(gen.gen)
        finally:
            self._writing.release()

    def stats(self, gen: Generation) -> dict:
        """What `citebot index stats` shows of a generation."""
        m = gen.manifest
        size = Path(self.uri).expanduser().stat().st_size if self.lite else None
        return {"index": f"{self.uri} ({self.name})", "generation": gen.gen,
                "sources": gen.count("sources"), "chunks": gen.count(), "model": m.model,
                "dim": m.dim, "max_tokens": m.max_tokens, "target_tokens": m.target_tokens,
                "overlap_sentences": m.overlap_sentences, "vector_kind": m.vector_kind,
                "format_version": m.format_version, "created_at": m.created_at, "bytes": size}

    def problems(self, manifest: Manifest) -> list[str]:
        """What `citebot index check` finds wrong with the live generation (empty: sound)."""
        try:
            gen = self.open(manifest)
        except CitebotError as exc:
            return [str(exc)]
        found: list[str] = []
        sources = gen.sources()
        held: Counter[str] = Counter()
        live: list[int] = []
        for r in gen.rows("chunks", ["source_id", "start", "end", "text"]):
            live.append(r["id"])
            held[r["source_id"]] += 1
            if r["source_id"] not in sources:
                found.append(f"chunk {r['id']} belongs to no source")
            elif r["end"] - r["start"] != len(r["text"]):
                found.append(f"chunk {r['id']} has offsets that do not fit its text")
        for s in sources.values():
            if held[s.id] != s.chunks:
                found.append(f"{s.location} lists {s.chunks} chunks, Milvus holds {held[s.id]}")
        chunk_set = set(live)
        orphans = {r["chunk_id"] for r in gen.rows("sentences", ["chunk_id"])} - chunk_set
        if orphans:
            found.append(f"{len(orphans)} chunks' sentences outlived their chunk")
        sample = [live[0], live[len(live) // 2], live[-1]] if live else []
        vecs = gen.embeddings(sample)
        if len(sample) and not np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3):
            found.append("some chunk vectors are not normalised")
        for cid, v in zip(sample, vecs, strict=True):
            got = gen.candidates("", v, 1)
            if not len(got.ids) or (int(got.ids[0]) != cid and float(got.dense[0]) < 0.999):
                found.append(f"a search for chunk {cid}'s own vector does not find it")
        return list(dict.fromkeys(found))[:20]

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
            schema.add_field("_", _dt().FLOAT_VECTOR, dim=len(PLACEHOLDER))
        return schema

    def _create(self, name: str, schema, indexes: dict[str, tuple[str, str, dict]]) -> None:
        params = self.client.prepare_index_params()
        indexes = indexes or {"_": ("FLAT", "L2", {})}
        for field, (kind, metric, extra) in indexes.items():
            params.add_index(field, index_type=kind, params=extra,
                             **({"metric_type": metric} if metric else {}))
        if self.client.has_collection(name):
            self.client.drop_collection(name)  # a leftover of a killed rebuild
        # Session: a process reads its own writes at once, and other processes without
        # waiting for the engine's next time tick (Strong would, up to 200 ms on a server).
        self.client.create_collection(name, schema=schema, index_params=params,
                                      consistency_level="Session")
        self._loaded.add(name)

    def _load(self, name: str) -> None:
        if name in self._loaded:
            return
        if not self.client.has_collection(name):
            raise IndexCorrupt(f"the Milvus collection {name} is missing", path=self.uri)
        self.client.load_collection(name)
        self._loaded.add(name)


def _dt():
    from pymilvus import DataType

    return DataType


class MilvusWriter:
    """An update of a Milvus index: the same IndexWriter the local store's Writer is.

    Segments and merging are Milvus's own business (it compacts in the background).
    """

    def __init__(self, gen: Generation, *, is_new: bool) -> None:
        self.gen, self.is_new = gen, is_new

    def manifest(self) -> Manifest:
        return self.gen.manifest

    def state(self) -> str:
        return self.gen.gen

    def lookup(self) -> RecordLookup:
        """The indexed sources for planning: Milvus's are read whole, into dict tables."""
        return RecordLookup(self.gen.sources(), self.gen.file_keys())

    def chunks_kept(self, dropped: Sequence[str]) -> int:
        """How many stored chunks stay once the dropped sources' go."""
        gone = self.gen.sources(dropped) if dropped else {}
        return self.gen.count() - sum(s.chunks for s in gone.values())

    def reusable(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, ChunkSentences]]:
        return self.gen.reusable(hashes)

    def apply(self, dropped: Sequence[str], rows: Sequence[SourceRows], embeddings: np.ndarray,
              sentences: Sequence[ChunkSentences]) -> str:
        """Write the rows' sources (replacing what changed of them), then delete the dropped
        sources that were not rewritten; the generation's name."""
        self.gen.put(rows, embeddings, sentences)
        rewritten = {r.source.id for r in rows}
        self.gen.remove([sid for sid in dropped if sid not in rewritten])
        return self.state()

    def merge(self) -> int:
        return 0

    def close(self) -> None:
        """The store owns the connection."""
