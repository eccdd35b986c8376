"""`ganvas train`, `ganvas eval`, `ganvas train-evaluator`, `ganvas train-upsampler` and `ganvas eval-upsampler`
(added to the main click group in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ganvas.core.hosts.cli.options import truncation_option


@click.command("train")
@click.option(
    "--data",
    required=True,
    help="'shapes', an imagefolder (metadata.jsonl) or a folder with .txt sidecars; "
    "or FORMAT[:PATH] of any registered dataset format (`ganvas_register_datasets`)",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run directory")
@click.option("--resolution", default=64, show_default=True, type=click.Choice(["32", "64", "128"]))
@click.option(
    "--steps", default=10000, show_default=True, help="total optimiser steps (a resumed run continues to this)"
)
@click.option("--batch", default=32, show_default=True, help="batch size per process")
@click.option("--preset", default="small", show_default=True, help="model size preset")
@click.option("--lr-g", default=1e-4, show_default=True)
@click.option("--lr-d", default=4e-4, show_default=True)
@click.option("--gp-every", default=4, show_default=True, help="apply the gradient penalty every k steps (0 = off)")
@click.option(
    "--augment",
    default="translation,cutout",
    show_default=True,
    help="DiffAugment ops applied to everything D sees ('' = none; no colour ops: captions name colours)",
)
@click.option(
    "--hard-negatives",
    default=0.0,
    show_default=True,
    help="share of mismatched-caption negatives drawn as the batch's most similar other caption",
)
@click.option(
    "--mode-seeking",
    default=0.0,
    show_default=True,
    help="weight of the MSGAN mode-seeking term: two noises for one caption must differ (fights collapse)",
)
@click.option(
    "--caption-forms",
    default="",
    help="prompt forms trained on, e.g. 'full:0.5,typed:0.35,name:0.15' "
    "(typed = 'name; style style' as hosts send it; needs label/style metadata; '' = full captions)",
)
@click.option(
    "--negatives",
    default="",
    help="mismatched-caption kinds, e.g. 'random:0.4,style:0.3,concept:0.3' "
    "(style = same concept, another design; concept = same design, another concept; '' = random)",
)
@click.option(
    "--gp-augment/--no-gp-augment",
    default=False,
    show_default=True,
    help="apply the gradient penalty to the augmented reals D sees",
)
@click.option(
    "--ema-images", default=0.0, show_default=True, help="EMA half-life in images (0 = a fixed 0.999 per step)"
)
@click.option(
    "--init",
    "init",
    default=None,
    help="model name or folder whose generator starts this run (the critic starts fresh: see --d-warmup-steps)",
)
@click.option(
    "--d-warmup-steps",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="steps that train only the critic first (useful after --init)",
)
@click.option(
    "--holdout-validation",
    is_flag=True,
    help="leave the validation hold-out (~5%% of train/, deterministic) out of training",
)
@click.option(
    "--evaluator",
    default=None,
    type=click.Path(file_okay=False),
    help="evaluator folder: log validation R@1/style/diversity to stats.jsonl every --val-every steps",
)
@click.option("--val-every", default=0, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@click.option(
    "--bf16/--no-bf16", default=False, show_default=True, help="bfloat16 autocast (faster, GPU and AVX512-BF16 CPUs)"
)
@click.option("--shapes-size", default=20000, show_default=True, help="images in the rendered shapes pool")
@click.option(
    "--render-processes",
    "--workers",
    "workers",
    default=1,
    show_default=True,
    help="processes rendering the shapes pool (--workers: the 0.1 name; `serve --workers` are threads)",
)
@click.option("--log-every", default=50, show_default=True, help="steps between stats.jsonl records")
@click.option(
    "--sample-every", default=500, show_default=True, help="steps between sample grids (a multiple of --log-every)"
)
@click.option("--checkpoint-every", default=1000, show_default=True)
@click.option("--max-minutes", default=None, type=float, help="stop (and save) after this much wall time")
@click.option("--resume", is_flag=True, help="continue the run in --out exactly where it stopped")
@click.option("--no-progress", is_flag=True, help="no progress bar (logs still go to stats.jsonl)")
@click.option(
    "--text-encoder",
    default=None,
    help="registered text encoder the model is trained with "
    "(`ganvas_register_text_encoders`)  [default: minilm; with --resume, the run's own]",
)
def train_command(
    data,
    out,
    resolution,
    steps,
    batch,
    preset,
    lr_g,
    lr_d,
    gp_every,
    augment,
    hard_negatives,
    mode_seeking,
    caption_forms,
    negatives,
    gp_augment,
    ema_images,
    init,
    d_warmup_steps,
    holdout_validation,
    evaluator,
    val_every,
    seed,
    threads,
    device,
    bf16,
    shapes_size,
    workers,
    log_every,
    sample_every,
    checkpoint_every,
    max_minutes,
    resume,
    no_progress,
    text_encoder,
):
    """Train a text-conditional GAN; the model folder appears in OUT/model."""
    from ganvas.core.hosts.cli import training_inputs as inputs
    from ganvas.core.training.trainer import TrainOptions, train

    opts = TrainOptions(
        data=data,
        out=out,
        resolution=int(resolution),
        steps=steps,
        batch=batch,
        preset=preset,
        lr_g=lr_g,
        lr_d=lr_d,
        gp_every=gp_every,
        augment=augment,
        hard_negatives=hard_negatives,
        mode_seeking=mode_seeking,
        caption_forms=caption_forms,
        negatives=negatives,
        gp_augment=gp_augment,
        ema_images=ema_images,
        init=str(inputs.model_folder(init)) if init else None,
        d_warmup_steps=d_warmup_steps,
        holdout_validation=holdout_validation,
        evaluator=evaluator,
        val_every=val_every,
        seed=seed,
        threads=threads,
        device=device,
        bf16=bf16,
        shapes_size=shapes_size,
        workers=workers,
        log_every=log_every,
        sample_every=sample_every,
        checkpoint_every=checkpoint_every,
        max_minutes=max_minutes,
        resume=resume,
        progress=not no_progress,
    )
    if data == "shapes":
        from ganvas.core.datasets.folders import SHAPES_SAMPLE_CAPTIONS

        opts.extra["sample_captions"] = SHAPES_SAMPLE_CAPTIONS
    # The dataset through its registered format, the captions through the registered text encoder.
    choice = inputs.resolve_data(data)
    dataset = choice.load(
        opts.resolution, seed=seed, size=shapes_size, workers=workers, subset="train" if holdout_validation else "all"
    )
    encoder = text_encoder or (inputs.run_text_encoder(out) if resume else None) or "minilm"

    def validation():  # the --evaluator probe: the hold-out and the whole train split, RGB on white
        return tuple(choice.load(opts.resolution, subset=subset, channels=3) for subset in ("validation", "all"))

    result = train(
        opts,
        log=lambda m: click.echo(m, err=True),
        dataset=dataset,
        embeddings=inputs.embeddings(encoder, opts.cache_dir),
        validation=validation,
    )
    click.echo(json.dumps({"model": str(Path(out) / "model"), **result}))


@click.command("train-evaluator")
@click.option(
    "--data",
    required=True,
    help="dataset root with train/ (imagefolder); only train/ is used; "
    "or FORMAT[:PATH] of any registered dataset format",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder to save the evaluator in")
@click.option("--epochs", default=20, show_default=True)
@click.option("--batch", default=256, show_default=True, help="contrastive batch (more negatives per step)")
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", default=None, type=int)
@click.option("--holdout-validation", is_flag=True, help="leave the validation hold-out of train/ out too")
@click.option(
    "--text-encoder",
    default="minilm",
    show_default=True,
    help="registered text encoder: the one the models it will judge were trained with",
)
def train_evaluator_command(data, out, epochs, batch, device, threads, holdout_validation, text_encoder):
    """Train the contrastive image-text evaluator used by `ganvas eval` (train split only)."""
    from ganvas.core.datasets.formats import loader_takes
    from ganvas.core.evaluation.report import train_split_evaluator
    from ganvas.core.hosts.cli import training_inputs as inputs

    choice = inputs.resolve_data(data)
    # RGB on white whatever the dataset holds: the evaluator judges transparent models composited on white.
    split = {"split": "train"} if loader_takes(choice.loader, "split") else {}
    dataset = choice.load(64, channels=3, subset="train" if holdout_validation else "all", **split)
    path = train_split_evaluator(
        Path(data),
        Path(out),
        epochs=epochs,
        device=device,
        threads=threads,
        batch=batch,
        holdout_validation=holdout_validation,
        log=lambda m: click.echo(m, err=True),
        data=dataset,
        embeddings=inputs.embeddings(text_encoder),
    )
    click.echo(str(path))


@click.command("eval")
@click.option("--model", "model", required=True, help="model name or checkpoint folder")
@click.option("--data", required=True, help="'shapes' or a dataset root (e.g. emoji64) with split folders")
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="test, unseen_concepts, or validation (the hold-out carved from train/; datasets only)",
)
@click.option("--evaluator", default=None, type=click.Path(), help="evaluator folder (default: the model folder)")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=None, type=int)
@truncation_option("psi, as `generate --truncation`: measure the model at the setting users pick")
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="also write the report as JSON")
def eval_command(model, data, split, evaluator, seed, threads, truncation, json_out):
    """Measure a model: attribute accuracy on shapes, R-precision/FID/KID/diversity on a captioned dataset."""
    from ganvas.core.datasets.formats import loader_takes
    from ganvas.core.evaluation.report import evaluate_dataset_model, evaluate_shapes_model, load_eval_data
    from ganvas.core.hosts.cli import training_inputs as inputs

    log = lambda m: click.echo(m, err=True)  # noqa: E731
    folder = inputs.model_folder(model)
    resolution, encoder = inputs.model_resolution_and_encoder(folder)
    embeddings = inputs.embeddings(encoder)  # the model's own text encoder, as its plugin registered it
    if data == "shapes":
        report, text = evaluate_shapes_model(
            model, seed=seed, threads=threads, log=log, folder=folder, embeddings=embeddings, truncation=truncation
        )
    else:
        choice = inputs.resolve_data(data)
        dataset, train = load_eval_data(choice.load, split, resolution, splits=loader_takes(choice.loader, "split"))
        report, text = evaluate_dataset_model(
            model,
            Path(data),
            split,
            evaluator=evaluator,
            seed=seed,
            threads=threads,
            log=log,
            folder=folder,
            data=dataset,
            train=train,
            embeddings=embeddings,
            truncation=truncation,
        )
    click.echo(text)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))


@click.command("train-upsampler")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="high-resolution dataset root with train/ (e.g. emoji256a); low-res inputs are Lanczos downsamples",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run directory; the model is OUT/model")
@click.option("--scale", default=4, show_default=True)
@click.option("--hr-side", default=256, show_default=True, help="high-resolution side")
@click.option("--width", default=32, show_default=True, help="feature channels")
@click.option("--blocks", default=3, show_default=True, help="residual blocks (two 3x3 convs each)")
@click.option("--steps", default=20000, show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--crop", default=32, show_default=True, help="low-resolution crop side")
@click.option("--lr", default=1e-3, show_default=True)
@click.option(
    "--loss",
    default="mse",
    show_default=True,
    type=click.Choice(["mse", "l1"]),
    help="reconstruction loss on premultiplied RGBA",
)
@click.option("--edge-weight", default=0.0, show_default=True, help="weight of the loss on image gradients")
@click.option("--val-every", default=500, show_default=True)
@click.option("--val-images", default=128, show_default=True, help="images of the validation hold-out of train/")
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--max-minutes", default=None, type=float)
@click.option("--threads", default=1, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--limit", default=None, type=int, help="first N train images only (smoke runs)")
@click.option("--cache", default=None, type=click.Path(file_okay=False), help="folder for decoded pairs (.npy)")
@click.option("--resume", is_flag=True, help="continue the run in --out exactly where it stopped")
@click.option(
    "--init",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="start from this upsampler folder's weights (fine-tune; same --width/--blocks/--scale)",
)
@click.option(
    "--adv-weight",
    default=0.0,
    show_default=True,
    help="weight of the adversarial term (patch discriminator); 0 = reconstruction only",
)
@click.option(
    "--adv-start-step",
    default=0,
    show_default=True,
    help="the upsampler gets the adversarial term from this step (the discriminator trains from 0)",
)
@click.option("--adv-loss", default="hinge", show_default=True, type=click.Choice(["hinge", "nonsaturating"]))
@click.option("--d-lr", default=2e-4, show_default=True, help="discriminator learning rate (Adam 0.5, 0.99)")
@click.option("--d-width", default=16, show_default=True, help="discriminator channels of its first convolution")
@click.option(
    "--keep",
    default=None,
    type=click.Choice(["best", "last"]),
    help="model folder: best validation PSNR or last validation step  [default: best; last with --adv-weight]",
)
def train_upsampler_command(
    data,
    out,
    scale,
    hr_side,
    width,
    blocks,
    steps,
    batch,
    crop,
    lr,
    loss,
    edge_weight,
    val_every,
    val_images,
    checkpoint_every,
    max_minutes,
    threads,
    seed,
    limit,
    cache,
    resume,
    init,
    adv_weight,
    adv_start_step,
    adv_loss,
    d_lr,
    d_width,
    keep,
):
    """Train an upsampler (low-res -> high-res, RGBA) on a dataset's train split; best validation step kept."""
    from ganvas.core.training.upsampler import UpsamplerTrainOptions, train_upsampler

    opts = UpsamplerTrainOptions(
        data=data,
        out=out,
        scale=scale,
        hr_side=hr_side,
        width=width,
        blocks=blocks,
        steps=steps,
        batch=batch,
        crop=crop,
        lr=lr,
        loss=loss,
        edge_weight=edge_weight,
        val_every=val_every,
        val_images=val_images,
        checkpoint_every=checkpoint_every,
        max_minutes=max_minutes,
        threads=threads,
        seed=seed,
        limit=limit,
        cache=cache,
        resume=resume,
        init=init,
        adv_weight=adv_weight,
        adv_start_step=adv_start_step,
        adv_loss=adv_loss,
        d_lr=d_lr,
        d_width=d_width,
        keep=keep,
    )
    try:
        opts.check()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(json.dumps(train_upsampler(opts, log=lambda m: click.echo(m, err=True))))


@click.command("eval-upsampler")
@click.option("--model", "model", default=None, help="upsampler name or folder  [default: the automatic choice]")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="high-resolution dataset root (e.g. emoji256a) with split folders",
)
@click.option(
    "--lr-data",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="low-resolution twin dataset (e.g. emoji64a); default: Lanczos downsamples of --data",
)
@click.option("--split", default="test", show_default=True, help="test, unseen_concepts, train or validation")
@click.option("--limit", default=None, type=int, help="first N images of the split")
@click.option("--threads", default=1, show_default=True)
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="also write the report as JSON")
def eval_upsampler_command(model, data, lr_data, split, limit, threads, json_out):
    """PSNR/SSIM (RGB on white, alpha) of an upsampler against Lanczos and bicubic on a split."""
    from ganvas.core.plugin_manager import get_plugin_manager
    from ganvas.core.requests import GanvasError
    from ganvas.core.threads import configure_threads
    from ganvas.core.training.upsampler import evaluate_upsampler, report_text
    from ganvas.core.upscaling import choose, load

    configure_threads(threads)
    chosen = choose(get_plugin_manager(), 64, model)
    if chosen is None:
        raise GanvasError("no upsampler is registered; pass --model FOLDER")
    loaded = load(*chosen[:2], "cpu", chosen[2])
    report = evaluate_upsampler(
        loaded,
        Path(data),
        split,
        Path(lr_data) if lr_data else None,
        limit,
        threads,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(report_text(report))
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))


@click.group()
def training_cli():
    """The training commands alone (for machines where only the core's dependencies are installed)."""


for _command in (train_command, train_evaluator_command, eval_command, train_upsampler_command, eval_upsampler_command):
    training_cli.add_command(_command)

if __name__ == "__main__":
    training_cli()
