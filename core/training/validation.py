"""Validation figures logged during training (stats.jsonl), on the hold-out carved from train/.

Everything a recipe is chosen by is read here, never on test/: R@1 for the full caption and for the prompt
form users type (both scored against the full caption by the project's evaluator, which training never
uses as a loss), style control for both, and diversity on style-less prompts (a bare name should vary the
design) next to the spread across seeds of a typed prompt (one design should stay one design).
"""

from __future__ import annotations

import torch

from ganvas.core.datasets.folders import CaptionedImages, typed_prompt
from ganvas.core.evaluation.evaluator import pairwise_spread
from ganvas.core.io.images import from_uint8
from ganvas.core.model.networks import noise


def _full_captions(data: CaptionedImages) -> list[str]:
    return [data.captions[i] for i in data.caption_index.tolist()]


class ValidationProbe:
    """`held`: the validation hold-out, `train`: the whole train split (both RGB on white, at the training
    resolution, with per-image label/style metadata), as the dataset's format loads them."""

    def __init__(
        self,
        held: CaptionedImages,
        train: CaptionedImages,
        evaluator,
        cache,
        device,
        diversity_concepts: int = 40,
        seeds: int = 8,
    ):
        self.device = device
        self.ev = evaluator.to(device).eval()
        self.seeds = seeds
        labels = list(held.labels)
        full = _full_captions(held)
        typed = [typed_prompt(label, style) for label, style in zip(held.labels, held.image_styles)]
        self.full_vec = cache.lookup(full).to(device)
        self.typed_vec = cache.lookup(typed).to(device)
        self.z = noise(64, range(len(labels)))  # z_dim is checked against the generator on each call
        with torch.no_grad():
            self.txt = self.ev.embed_texts(self.full_vec)
            self.real_emb = self._embed(from_uint8(held.images).to(device))[1]
        self.labels = labels
        # Style control: each image's caption against the same concept's captions in its other designs.
        train_labels, train_full = list(train.labels), _full_captions(train)
        by_concept: dict[str, list[str]] = {}
        for label, text in zip(train_labels, train_full):
            by_concept.setdefault(label, [])
            if text not in by_concept[label]:
                by_concept[label].append(text)
        self.style_rows = [i for i, c in enumerate(labels) if len(by_concept.get(c, [])) >= 2]
        with torch.no_grad():
            self.style_options = [
                (
                    self.ev.embed_texts(cache.lookup(by_concept[labels[i]]).to(device)),
                    by_concept[labels[i]].index(full[i]),
                )
                for i in self.style_rows
            ]
        # Diversity: bare names of multi-design concepts, beside the real spread across their designs.
        chosen = [c for c in dict.fromkeys(labels) if train_labels.count(c) >= 2][:diversity_concepts]
        self.names = chosen
        self.name_vec = cache.lookup(chosen).to(device)
        self.real_spread = []
        with torch.no_grad():
            for c in chosen:
                members = torch.tensor([i for i, label in enumerate(train_labels) if label == c])
                self.real_spread.append(pairwise_spread(self._embed(from_uint8(train.images[members]).to(device))[0]))
        self.typed_for_spread = self.typed_vec[[labels.index(c) for c in chosen]]
        with torch.no_grad():
            self.real_r1 = self._r1(self.real_emb)
            self.real_style = self._style(self.real_emb)

    @classmethod
    def from_data(cls, held: CaptionedImages, train: CaptionedImages, evaluator_folder: str, cache, device, log=print):
        from ganvas.core.evaluation.evaluator import load_evaluator

        if not len(held) or held.labels is None or train.labels is None:
            raise ValueError(f"{train.source}: validation needs label/style metadata and a non-empty hold-out")
        log(f"validation: {len(held)} held-out images of {train.source}, evaluator {evaluator_folder}")
        return cls(held, train, load_evaluator(evaluator_folder), cache, device)

    def _embed(self, images):
        return self.ev.features_and_embeddings(images)

    def _r1(self, emb) -> float:
        from ganvas.core.evaluation.report import r_precision

        return r_precision(emb.cpu(), self.txt.cpu(), self.labels, self.labels, self.txt.cpu(), draws=1)[
            "r_precision_at_1"
        ]

    def _style(self, emb) -> float:
        hits = sum(
            int((options @ emb[i]).argmax()) == own for i, (options, own) in zip(self.style_rows, self.style_options)
        )
        return hits / max(len(self.style_rows), 1)

    def _generate(self, G, vectors, z):
        out = []
        for i in range(0, len(vectors), 256):
            out.append(G(z[i : i + 256].to(self.device), vectors[i : i + 256]).float())
        return torch.cat(out)

    @torch.no_grad()
    def __call__(self, G) -> dict:
        z = self.z if G.config.z_dim == 64 else noise(G.config.z_dim, range(len(self.labels)))
        full_emb = self._embed(self._generate(G, self.full_vec, z))[1]
        typed_emb = self._embed(self._generate(G, self.typed_vec, z))[1]
        zs = noise(G.config.z_dim, range(10_000, 10_000 + self.seeds))
        name_ratio, typed_ratio = [], []
        for k in range(len(self.names)):
            name_imgs = self._generate(G, self.name_vec[k : k + 1].expand(self.seeds, -1), zs)
            typed_imgs = self._generate(G, self.typed_for_spread[k : k + 1].expand(self.seeds, -1), zs)
            name_ratio.append(pairwise_spread(self._embed(name_imgs)[0]) / self.real_spread[k])
            typed_ratio.append(pairwise_spread(self._embed(typed_imgs)[0]) / self.real_spread[k])
        r = lambda x: round(float(x), 4)  # noqa: E731
        return {
            "val_r1_full": r(self._r1(full_emb)),
            "val_r1_typed": r(self._r1(typed_emb)),
            "val_r1_real": r(self.real_r1),
            "val_style_full": r(self._style(full_emb)),
            "val_style_typed": r(self._style(typed_emb)),
            "val_style_real": r(self.real_style),
            "val_name_spread_ratio": r(sum(name_ratio) / len(name_ratio)),
            "val_typed_spread_ratio": r(sum(typed_ratio) / len(typed_ratio)),
        }
