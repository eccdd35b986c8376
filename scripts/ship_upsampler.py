"""Ship a trained upsampler: copy RUN/model into models/upsamplers/NAME, measure it once on the test split
(`ganvas eval-upsampler`'s function) and write evaluation.json and the model card from the numbers.

    python scripts/ship_upsampler.py --run runs/ups/run2 --data runs/data/emoji256a \\
        --lr-data ../shared/data/emoji64a [--name upsampler-x4] [--split test]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def evaluation_text(report: dict, command: str) -> str:
    rows = ["| method | PSNR RGB on white (dB) | SSIM RGB | PSNR alpha (dB) | SSIM alpha |", "|---|---|---|---|---|"]
    for method, s in report["methods"].items():
        name = "**this upsampler**" if method == "upsampler" else method
        rows.append(
            f"| {name} | {s['psnr_rgb']:.2f} | {s['ssim_rgb']:.4f} | {s['psnr_alpha']:.2f} | {s['ssim_alpha']:.4f} |"
        )
    gain = report["gain_over_lanczos_db"]
    return (
        f"On the `{report['split']}` split ({report['images']} images, held-out concept-design pairs, measured once), "
        f"64 px inputs: {report['low_res_inputs']}; mean over images, RGB composited on white and alpha:\n\n"
        + "\n".join(rows)
        + f"\n\nGain over Lanczos: {gain['rgb']:+.2f} dB (RGB), {gain['alpha']:+.2f} dB (alpha). "
        f"Upsampler time in this run: {report['upsampler']['ms_per_image']:.1f} ms per image (1 thread, "
        f"shared machine).\n\n```bash\n{command}\n```\n"
    )


def adversarial_text(trained: dict) -> str:
    adv = trained.get("adversarial")
    if not adv:
        return "no adversarial term"
    start = trained.get("init", {}).get("folder")
    return (
        f"plus {adv['weight']} x a {adv['loss']} adversarial term from a {adv['discriminator']} (from step "
        f"{adv['start_step']}, critic lr {adv['d_lr']})" + (f", fine-tuned from `{start}`" if start else "")
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--lr-data")
    parser.add_argument("--name", default="upsampler-x4")
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)

    from ganvas.core.io.checkpoint import file_hash
    from ganvas.core.pipeline import configure_threads
    from ganvas.core.training.upsampler import MODEL_CARD, evaluate_upsampler, report_text
    from ganvas.core.upscaling import clear_cache, load

    configure_threads(1)
    target = REPO / "models" / "upsamplers" / args.name
    target.mkdir(parents=True, exist_ok=True)
    source = Path(args.run) / "model"
    for name in ("config.json", "model.safetensors"):
        shutil.copy(source / name, target / name)
    clear_cache()
    loaded = load(args.name, target)
    lr = Path(args.lr_data) if args.lr_data else None
    report = evaluate_upsampler(loaded, Path(args.data), args.split, lr, log=print)
    print(report_text(report))
    (target / "evaluation.json").write_text(json.dumps({args.split: report}, indent=2) + "\n")
    config = json.loads((target / "config.json").read_text())
    trained, options = config["trained"], config["trained"]["options"]
    command = (
        f"ganvas eval-upsampler --model {args.name} --data {Path(args.data).name} "
        + (f"--lr-data {lr.name} " if lr else "")
        + f"--split {args.split}"
    )
    card = MODEL_CARD.format(
        name=args.name,
        in_res=config["in_resolution"],
        out_res=config["out_resolution"],
        scale=config["upsampler"]["scale"],
        params=trained["params"],
        size_kb=(target / "model.safetensors").stat().st_size / 1024,
        blocks=config["upsampler"]["blocks"],
        width=config["upsampler"]["width"],
        data=Path(trained["data"]).name,
        train_images=trained["train_images"],
        loss=options.get("loss", "mse").upper(),
        edge_weight=options["edge_weight"],
        steps=trained["steps"],
        batch=options["batch"],
        crop=options["crop"],
        hours=trained["hours"],
        threads=trained["threads"],
        lr=options["lr"],
        lr_min=options["lr_min"],
        best_step=trained["steps"],
        adversarial=adversarial_text(trained),
        evaluation=evaluation_text(report, command),
    )
    card += f"\nWeights: `model.safetensors`, sha256 prefix `{file_hash(target / 'model.safetensors', 10)}`.\n"
    (target / "README.md").write_text(card, encoding="utf-8")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
