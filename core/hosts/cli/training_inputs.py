"""What `ganvas train`, `ganvas train-evaluator` and `ganvas eval` hand to core/training and core/evaluation,
resolved through the plugin manager: the dataset read by the format registered for `--data`
(`ganvas_register_datasets`), the text encoder registered under the model's encoder name
(`ganvas_register_text_encoders`) wrapped in the on-disk EmbeddingCache, and the checkpoint folder of a
registered model name. core/training and core/evaluation never import the plugin manager themselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ganvas.core.errors import GanvasError


def _manager():
    from ganvas.core.plugin_manager import get_plugin_manager

    return get_plugin_manager()


def resolve_data(spec: str):
    """`--data` -> a DatasetChoice (format name, path, loader). One-line error naming the registered formats."""
    from ganvas.core.datasets.formats import resolve_dataset

    return resolve_dataset(spec, _manager().datasets())


def embeddings(encoder_name: str, cache_dir: str | os.PathLike | None = None):
    """An EmbeddingCache on the text encoder a plugin registered under `encoder_name`; the factory runs only when
    a caption is not cached yet."""
    from ganvas.core.text.encoder import EmbeddingCache, default_cache_dir

    encoders = _manager().text_encoders()
    if encoder_name not in encoders:
        raise GanvasError(
            f"text encoder {encoder_name!r} is not provided by any plugin "
            f"(available: {', '.join(sorted(encoders)) or 'none'})"
        )
    return EmbeddingCache(cache_dir or default_cache_dir(), encoder_name, factory=encoders[encoder_name].value)


def run_text_encoder(out: str | os.PathLike) -> str | None:
    """The text encoder a run directory's model was created with (--resume keeps it), or None for a new run."""
    state = Path(out) / "training_state.json"
    try:
        config = json.loads(state.read_text(encoding="utf-8"))["info"]["config"]
        return config.get("text_encoder") if isinstance(config, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def model_folder(name_or_path: str) -> Path:
    """A checkpoint folder path, or the name of a registered model (the pipeline's own lookup)."""
    from ganvas.core.pipeline import resolve_model

    _name, source, _origin = resolve_model(name_or_path, _manager())
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"model {name_or_path!r} comes from a plugin loader; ganvas eval needs a checkpoint folder")
    return Path(source)


def model_resolution_and_encoder(folder: Path) -> tuple[int, str]:
    """(resolution, text encoder name) from a checkpoint's config.json, read without loading the weights."""
    from ganvas.core.io.checkpoint import CheckpointError, read_config

    generator = read_config(folder).get("generator")
    if not isinstance(generator, dict) or not isinstance(generator.get("resolution"), int):
        raise CheckpointError(f"{Path(folder) / 'config.json'}: no generator resolution")
    encoder = generator.get("text_encoder", "minilm")
    return generator["resolution"], encoder if isinstance(encoder, str) and encoder else "minilm"
