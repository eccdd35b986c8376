"""`ganvas eval`: measure a model with the project's own instruments.

shapes: the attribute classifier of shapes_eval (accuracy per attribute, real renders as ceiling).
captioned datasets (emoji64): the contrastive evaluator of evaluator.py, trained on train/ only —
R-precision@1/top-5 against 99 captions of other concepts, FID/KID in its feature space with the
real-vs-real floor, and a diversity figure, each beside the real-image ceiling and the shuffled floor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganvas.core.datasets.folders import CaptionedImages, typed_prompt
from ganvas.core.evaluation.evaluator import pairwise_spread
from ganvas.core.io.checkpoint import load_generator
from ganvas.core.io.images import from_uint8, on_white
from ganvas.core.model.networks import noise
from ganvas.core.text.encoder import EmbeddingCache, default_cache_dir
from ganvas.core.threads import configure_threads

# Inputs come from the host (core/hosts/cli/train.py), which resolves them through the plugin manager: the
# checkpoint folder of a registered model name, the dataset read by the format registered for --data
# (`ganvas_register_datasets`), and an EmbeddingCache on the text encoder registered under the model's
# encoder name (`ganvas_register_text_encoders`). Called from Python without them, `model` must be a folder,
# --data is read by the built-in formats and captions are embedded by the built-in MiniLM.


def _embeddings_for(generator, embeddings: EmbeddingCache | None) -> EmbeddingCache:
    return embeddings or EmbeddingCache(default_cache_dir(), generator.config.text_encoder)


def load_eval_data(
    load, split: str, resolution: int, splits: bool = True
) -> tuple[CaptionedImages, CaptionedImages | None]:
    """(the split's images, the whole train split or None) for `ganvas eval`, RGB on white at `resolution`.

    `load(resolution, **options)` reads the dataset (a format's loader, see core/datasets/formats.py).
    "validation" is the hold-out carved from train/; a test concept's other designs are looked up in train/
    (None when the dataset has none). `splits=False`: the format has no splits; its images are the split."""
    if not splits:
        return load(resolution, channels=3), None
    if split == "validation":
        return load(resolution, split="train", subset="validation", channels=3), load(
            resolution, split="train", channels=3
        )
    data = load(resolution, split=split, channels=3)
    if split == "train":
        return data, None
    try:
        train = load(resolution, split="train", channels=3)
    except FileNotFoundError:
        train = None
    return data, train


def _builtin_eval_data(root, split: str, resolution: int):
    from ganvas.core.datasets.formats import imagefolder

    return load_eval_data(lambda res, **options: imagefolder(root, res, **options), split, resolution)


def _truncation_flag(truncation: float) -> str:
    """The eval command's --truncation, as the report's last line repeats it (nothing at the default)."""
    return f" --truncation {truncation:g}" if truncation != 1.0 else ""


@torch.no_grad()
def generate_from_vectors(
    generator, text_vectors: torch.Tensor, seeds: list[int], batch: int = 256, truncation: float = 1.0
) -> torch.Tensor:
    out = []
    for i in range(0, len(seeds), batch):
        z = noise(generator.config.z_dim, seeds[i : i + batch]) * truncation
        out.append(generator(z, text_vectors[i : i + batch]).float())
    return torch.cat(out) if out else torch.zeros(0, 3, generator.config.resolution, generator.config.resolution)


# --- shapes ---------------------------------------------------------------------------------------------------


def evaluate_shapes_model(
    model: str,
    seed: int = 0,
    threads: int | None = None,
    n_per_caption: int = 4,
    log=print,
    folder: Path | None = None,
    embeddings: EmbeddingCache | None = None,
    truncation: float = 1.0,
) -> tuple[dict, str]:
    """`model`: its name as typed (for the report); `folder`: its checkpoint folder (default: `model`)."""
    from ganvas.core.evaluation.shapes import (
        evaluate,
        format_report,
        load_classifier,
        save_classifier,
        train_classifier,
    )

    configure_threads(threads)
    folder = Path(folder or model)
    generator, _ = load_generator(folder)
    cache = _embeddings_for(generator, embeddings)
    if (folder / "attribute_classifier.safetensors").exists():
        classifier = load_classifier(folder)
    else:
        log(f"no attribute classifier beside {folder}; training one on real renders and saving it there")
        classifier = train_classifier(seed=seed, log=log)
        save_classifier(classifier, folder)

    def generate(captions, seeds):
        return generate_from_vectors(generator, cache.lookup(captions), seeds, truncation=truncation)

    report = evaluate(generate, n_per_caption=n_per_caption, seed=seed, classifier=classifier, log=log)
    report["model"], report["truncation"] = str(folder), truncation
    text = format_report(report)
    return (
        report,
        text + f"\ncommand: ganvas eval --model {model} --data shapes --seed {seed}{_truncation_flag(truncation)}",
    )


# --- captioned datasets ------------------------------------------------------------------------------------------


def train_split_evaluator(
    root: Path,
    out: Path,
    epochs: int = 20,
    device: str = "auto",
    threads=None,
    batch: int = 256,
    holdout_validation: bool = False,
    log=print,
    data: CaptionedImages | None = None,
    embeddings: EmbeddingCache | None = None,
) -> Path:
    """`data`: the train split at 64 px, RGB on white (the host loads it through the dataset's format; default:
    ROOT/train or ROOT as an imagefolder). `embeddings`: the text encoder's cache (default: MiniLM)."""
    from ganvas.core.evaluation.evaluator import save_evaluator, train_evaluator

    configure_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if data is None:
        from ganvas.core.datasets.formats import imagefolder

        # RGB on white whatever the dataset holds: the evaluator judges transparent models composited on white.
        data = imagefolder(root, 64, split="train", channels=3, subset="train" if holdout_validation else "all")
    full_captions = data.captions[: int(data.caption_index.max()) + 1]  # prompt forms come after: not needed here
    text = (embeddings or EmbeddingCache(default_cache_dir())).lookup(full_captions, log=log)
    model = train_evaluator(data.images, text, data.caption_index, epochs=epochs, batch=batch, device=device, log=log)
    return save_evaluator(
        model,
        out,
        {
            "data": data.source,
            "images": len(data),
            "epochs": epochs,
            "batch": min(batch, len(data)),
            "holdout_validation": holdout_validation,
        },
    )


def r_precision(
    img_emb, txt_emb, concept_of_row, pool_concepts, pool_emb, draws: int = 5, distractors: int = 99, seed: int = 0
) -> dict:
    """Rank each image's true caption among `distractors` captions of *other* concepts. Returns means/stds."""
    rng = np.random.default_rng(seed)
    top1, top5 = [], []
    pool_concepts = np.asarray(pool_concepts)
    for _ in range(draws):
        hits1 = hits5 = 0
        for i in range(len(img_emb)):
            others = np.flatnonzero(pool_concepts != concept_of_row[i])
            pick = rng.choice(others, size=min(distractors, len(others)), replace=False)
            cands = torch.cat([txt_emb[i : i + 1], pool_emb[pick]])
            scores = cands @ img_emb[i]
            rank = int((scores > scores[0]).sum())
            hits1 += rank == 0
            hits5 += rank < 5
        top1.append(hits1 / len(img_emb))
        top5.append(hits5 / len(img_emb))
    return {
        "r_precision_at_1": float(np.mean(top1)),
        "r_precision_at_1_std": float(np.std(top1)),
        "top5": float(np.mean(top5)),
        "top5_std": float(np.std(top5)),
    }


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = (covmean[0] if isinstance(covmean, tuple) else covmean).real  # older SciPy returned a tuple
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def kernel_inception_distance(
    a: torch.Tensor, b: torch.Tensor, subsets: int = 20, size: int = 200, seed: int = 0
) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (Binkowski et al.), averaged over subsets."""
    rng = np.random.default_rng(seed)
    a, b = a.double().numpy(), b.double().numpy()
    d = a.shape[1]
    m = min(size, len(a), len(b))
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        values.append(
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        )
    return float(np.mean(values))


def _concepts(data: CaptionedImages) -> list[str]:
    """Each image's concept: its metadata `label` when the dataset has them, else its caption."""
    full = [data.captions[i] for i in data.caption_index.tolist()]
    return list(data.labels) if data.labels is not None else full


@torch.no_grad()
def evaluate_dataset_model(
    model: str,
    root: Path,
    split: str,
    evaluator: str | None = None,
    seed: int = 0,
    threads: int | None = None,
    diversity_seeds: int = 8,
    diversity_concepts: int = 100,
    log=print,
    folder: Path | None = None,
    data: CaptionedImages | None = None,
    train: CaptionedImages | None = None,
    embeddings: EmbeddingCache | None = None,
    truncation: float = 1.0,
) -> tuple[dict, str]:
    """Both prompt forms are scored against the *full* caption: `generated` for images drawn from the full
    caption, `generated_typed` for images drawn from what users type (`name; style style`, the default
    backend's --style rule). Transparent models are judged composited on white, like the real images.

    `model`/`root`: as typed (for the report); `folder`: the checkpoint folder (default: `model`); `data`, `train`:
    see load_eval_data (default: `root` read as an imagefolder root); `embeddings`: the model's text encoder."""
    from ganvas.core.evaluation.evaluator import load_evaluator

    configure_threads(threads)
    folder = Path(folder or model)
    generator, config = load_generator(folder)
    ev = load_evaluator(Path(evaluator) if evaluator else folder)
    resolution = generator.config.resolution
    if data is None:
        data, train = _builtin_eval_data(root, split, resolution)
    real_set = data
    if real_set.skipped:
        log(f"skipped {len(real_set.skipped)} unreadable images in {real_set.source}")
    captions = [real_set.captions[i] for i in real_set.caption_index.tolist()]
    concepts = _concepts(real_set)
    typed = (
        [typed_prompt(label, style) for label, style in zip(real_set.labels, real_set.image_styles)]
        if real_set.labels is not None
        else list(captions)
    )
    cache = _embeddings_for(generator, embeddings)
    text_vectors = cache.lookup(captions, log=log)
    typed_vectors = cache.lookup(typed, log=log)

    seeds = [seed * 1_000_000 + i for i in range(len(captions))]
    log(f"generating {len(captions)} images for {split} captions, in the full and the typed prompt form")
    fake = on_white(generate_from_vectors(generator, text_vectors, seeds, truncation=truncation))
    fake_typed = on_white(generate_from_vectors(generator, typed_vectors, seeds, truncation=truncation))
    real = from_uint8(real_set.images)

    embed = ev.features_and_embeddings

    fake_feat, fake_emb = embed(fake)
    typed_emb = embed(fake_typed)[1]
    real_feat, real_emb = embed(real)
    txt_emb = ev.embed_texts(text_vectors)
    # Distractor pool: every caption of the split, each tagged with its concept.
    rp = lambda emb, txt, s: r_precision(emb, txt, concepts, concepts, txt_emb, seed=s)  # noqa: E731
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(captions)))
    report = {
        "model": str(folder),
        "split": split,
        "images": len(captions),
        "resolution": resolution,
        "channels": generator.config.channels,
        "truncation": truncation,
        "generated": rp(fake_emb, txt_emb, seed),
        "generated_typed": rp(typed_emb, txt_emb, seed),
        "real": rp(real_emb, txt_emb, seed),
        "shuffled": rp(fake_emb, txt_emb[perm], seed),
        "chance_r_precision_at_1": 0.01,
    }
    # FID/KID: generated half A vs real half B, beside real half A vs real half B (the floor).
    half = len(captions) // 2
    a, b = perm[:half], perm[half : 2 * half]
    report["fid"] = {
        "generated_vs_real": frechet_distance(fake_feat[a], real_feat[b]),
        "real_vs_real": frechet_distance(real_feat[a], real_feat[b]),
    }
    report["kid"] = {
        "generated_vs_real": kernel_inception_distance(fake_feat[a], real_feat[b]),
        "real_vs_real": kernel_inception_distance(real_feat[a], real_feat[b]),
    }
    # A test concept's other designs live in train/: both the style and the diversity figures look there.
    # The validation hold-out's other designs are the rest of train/ (which holds the hold-out itself).
    others = [train] if split == "validation" and train is not None else [real_set] + ([train] if train else [])
    report["style"] = _style_accuracy(
        others, captions, concepts, cache, ev, real_emb, log, generated=fake_emb, generated_typed=typed_emb
    )
    styles = _concept_styles(others, concepts, diversity_concepts, embed)
    typed_of = dict(zip(concepts, typed_vectors))
    report["diversity"] = _diversity(
        generator, ev, concepts, typed_of, cache, styles, diversity_seeds, seed, truncation
    )
    return report, format_dataset_report(report, model, root, split, seed)


def _style_accuracy(sources: list[CaptionedImages], captions, concepts, cache, ev, real_emb, log, **generated) -> dict:
    """Style control: rank each image's caption among the captions of the *same* concept in its other designs
    (taken from `sources`: the split and train/); a hit when its own design's caption wins. Images of concepts
    drawn in one design only are left out. Chance is the mean of 1 / number of designs. `generated` maps a
    report key to the embeddings of one set of generated images (one per caption), all scored in one pass."""
    by_concept: dict[str, list[str]] = {}
    for source in sources:
        full = [source.captions[i] for i in source.caption_index.tolist()]
        for concept, text in zip(_concepts(source), full):
            texts = by_concept.setdefault(concept, [])
            if text not in texts:
                texts.append(text)
    usable = [i for i, c in enumerate(concepts) if len(by_concept.get(c, [])) >= 2]
    if not usable:
        return {"images": 0, **{k: float("nan") for k in generated}, "real": float("nan"), "chance": float("nan")}
    needed = sorted({t for i in usable for t in by_concept[concepts[i]]})
    index = {t: k for k, t in enumerate(needed)}
    text_emb = ev.embed_texts(cache.lookup(needed, log=log))
    hits = dict.fromkeys([*generated, "real"], 0)
    chance = 0.0
    for i in usable:
        options = [index[t] for t in by_concept[concepts[i]]]
        own = options.index(index[captions[i]])
        for key, emb in [*generated.items(), ("real", real_emb)]:
            hits[key] += int((text_emb[options] @ emb[i]).argmax()) == own
        chance += 1 / len(options)
    n = len(usable)
    return {"images": n, **{k: v / n for k, v in hits.items()}, "chance": chance / n}


def _concept_styles(sources: list[CaptionedImages], split_concepts: list[str], limit: int, embed) -> dict:
    """Evaluator features of every real image of up to `limit` concepts of the split that exist in 2+ styles,
    looking through every dataset of `sources`: a test concept has its other styles in train/."""
    images: dict[str, list[torch.Tensor]] = {}
    for source in sources:
        for concept, image in zip(_concepts(source), source.images):
            images.setdefault(concept, []).append(image)
    wanted = list(dict.fromkeys(split_concepts))
    chosen = [c for c in wanted if len(images.get(c, [])) >= 2][:limit]
    return {concept: embed(from_uint8(torch.stack(images[concept])))[0] for concept in chosen}


def _diversity(generator, ev, concepts, typed_of: dict, cache, styles: dict, n_seeds, seed, truncation=1.0) -> dict:
    """Seed spread of a concept's bare name (no style word: designs should vary, ratio near 1) and of one
    typed prompt (`name; style style`: one design, ratio well below 1), each over the real spread of that
    concept across its designs, in evaluator feature space."""
    if not styles:
        return {
            "concepts": 0,
            "seeds": n_seeds,
            "name_ratio": float("nan"),
            "typed_ratio": float("nan"),
            "real_style_spread": float("nan"),
            "generated_pixel_std": float("nan"),
        }
    name_vectors = cache.lookup(list(styles))
    seeds = [seed * 1_000_000 + 500_000 + k for k in range(n_seeds)]
    name_spread, typed_spread, real_spread, pixel_std = [], [], [], []

    def generate(vectors):
        return generate_from_vectors(generator, vectors, seeds, truncation=truncation)

    for k, (concept, real_features) in enumerate(styles.items()):
        names = on_white(generate(name_vectors[k : k + 1].expand(n_seeds, -1)))
        typed = on_white(generate(typed_of[concept][None].expand(n_seeds, -1)))
        name_spread.append(pairwise_spread(ev.image_features(names)))
        typed_spread.append(pairwise_spread(ev.image_features(typed)))
        pixel_std.append(float(names.std(0).mean()))
        real_spread.append(pairwise_spread(real_features))
    r = float(np.mean(real_spread))
    return {
        "concepts": len(styles),
        "seeds": n_seeds,
        "real_style_spread": r,
        "name_seed_spread": float(np.mean(name_spread)),
        "typed_seed_spread": float(np.mean(typed_spread)),
        "name_ratio": float(np.mean(name_spread)) / r if r else float("nan"),
        "typed_ratio": float(np.mean(typed_spread)) / r if r else float("nan"),
        "generated_pixel_std": float(np.mean(pixel_std)),
    }


def format_dataset_report(r: dict, model, root, split, seed) -> str:
    def rp(x):
        return (
            f"R@1 {x['r_precision_at_1'] * 100:5.1f}% ± {x['r_precision_at_1_std'] * 100:.1f}   "
            f"top-5 {x['top5'] * 100:5.1f}%"
        )

    d = r["diversity"]
    ceiling = max(r["real"]["r_precision_at_1"], 1e-9)
    lines = [
        f"{r['model']} on {split} ({r['images']} captions, {r['resolution']} px)",
        f"  generated, full caption    {rp(r['generated'])}",
        f"  generated, typed prompt    {rp(r['generated_typed'])}   (name; style style)",
        f"  real (ceiling)             {rp(r['real'])}",
        f"  shuffled (floor)           {rp(r['shuffled'])}   chance 1.0%",
        f"  generated / ceiling R@1: full {r['generated']['r_precision_at_1'] / ceiling:.2f}   "
        f"typed {r['generated_typed']['r_precision_at_1'] / ceiling:.2f}",
        f"  FID (evaluator space) {r['fid']['generated_vs_real']:.4g}   real-vs-real floor {r['fid']['real_vs_real']:.4g}",
        f"  KID (evaluator space) {r['kid']['generated_vs_real']:.4g}   real-vs-real floor {r['kid']['real_vs_real']:.4g}",
        f"  style (own design's caption ranked first among the concept's designs, {r['style']['images']} images): "
        f"generated {r['style']['generated'] * 100:.1f}% (typed {r['style']['generated_typed'] * 100:.1f}%)   "
        f"real {r['style']['real'] * 100:.1f}%   chance {r['style']['chance'] * 100:.1f}%",
        f"  diversity over seeds / real spread across designs ({d['concepts']} multi-design concepts): "
        f"bare name {d['name_ratio']:.2f} (designs should vary)   typed prompt {d['typed_ratio']:.2f} "
        f"(one design should stay one)",
        f"command: ganvas eval --model {model} --data {root} --split {split} --seed {seed}"
        f"{_truncation_flag(r.get('truncation', 1.0))}",
    ]
    return "\n".join(lines)
