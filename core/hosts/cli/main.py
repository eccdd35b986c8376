"""The `ganvas` command line (console script). Heavy imports (torch, the pipeline) happen inside the
commands, so `ganvas --help`, `--version` and `plugins` start instantly.

Errors are one line ("Error: ...") unless --debug (or GANVAS_DEBUG=1) asks for the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import reprlib
import sys
from pathlib import Path

import click

from ganvas import __version__
from ganvas.core.errors import one_line
from ganvas.core.hosts.cli.options import truncation_option
from ganvas.core.requests import MAX_SEED, default_model_name, trained_styles

log = logging.getLogger("ganvas")


def _setup_logging(verbosity: int | None = None) -> None:
    if verbosity is None:
        raw = os.environ.get("GANVAS_VERBOSITY", "0")
        verbosity = int(raw) if raw.isdigit() else 0
    if not any(getattr(h, "_ganvas_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("ganvas: %(levelname)s: %(message)s"))
        handler._ganvas_cli = True
        log.addHandler(handler)
        log.propagate = False
    level = logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING
    if log.level == logging.NOTSET or log.level > level:
        log.setLevel(level)


class GanvasGroup(click.Group):
    """Root group: adds plugin commands on first lookup, and turns errors into one line."""

    plugin_commands_loaded = False

    def _load_plugin_commands(self) -> None:
        if not self.plugin_commands_loaded:
            self.plugin_commands_loaded = True
            _setup_logging()
            from ganvas.core.plugin_manager import get_plugin_manager

            get_plugin_manager().register_commands(self)

    def list_commands(self, ctx):
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            self._load_plugin_commands()
            command = super().get_command(ctx, name)
        return command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug") or ctx.meta.get("ganvas.debug") or os.environ.get("GANVAS_DEBUG") == "1":
                raise
            raise click.ClickException(one_line(exc)) from None


@click.group(cls=GanvasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="ganvas", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="show tracebacks instead of one-line errors")
@click.option("-v", "--verbose", count=True, help="more log output (-vv: debug); or GANVAS_VERBOSITY")
def main(debug, verbose):
    """ganvas: fast text-to-image generation with a small GAN.

    \b
    Examples:
      ganvas generate "fox" --style noto -n 4 --seed 7
      ganvas interpolate "red apple" "green apple" --style noto --steps 8 --gif
      ganvas generate --from-png ganvas-out/fox-noto-style-seed7.png
      ganvas plugins --all
    """
    _setup_logging(verbose or None)


def _set_debug(ctx, param, value):
    if value:
        ctx.meta["ganvas.debug"] = True  # ctx.meta is shared with the root context, which handles errors


# `ganvas generate ... --debug` works as well as `ganvas --debug generate ...`
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), help="torch CPU threads  [default: $GANVAS_THREADS or 1]"
)
debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_debug,
    help="show tracebacks instead of one-line errors",
)


# --- shared helpers -----------------------------------------------------------------------------------------


def _progress_enabled(flag: bool | None, total: int) -> bool:
    if flag is None:
        return total > 1 and sys.stderr.isatty()
    return flag


def _parse_params(params: tuple[str, ...]) -> dict:
    extra = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            extra[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            extra[key.strip()] = value
    return extra


MAX_PROMPT_LINE_BYTES = 64 * 1024  # far above any prompt the request policy accepts (1000 characters by default)
_READ_BLOCK = 64 * 1024


def read_prompts_file(path: str) -> list[str]:
    """One prompt per line; blank lines and '#' comments skipped. Errors name the line.

    Streamed block by block with the hot folder's per-file limits (size, prompt count) plus a line
    length limit, so /dev/zero or a huge file is refused after reading at most a few megabytes."""
    try:
        with open(path, "rb") as fh:
            prompts = _prompt_lines(fh, path)
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not prompts:
        raise click.ClickException(f"{path}: no prompts (one per line; blank and # lines are skipped)")
    return prompts


def _prompt_lines(fh, path: str) -> list[str]:
    from ganvas.core.io.prompt_files import Limits  # one prompts file is one hot-folder job: the same limits

    limits, prompts, size, bad_text = Limits(), [], 0, None
    for number, raw in enumerate(_lines(fh, MAX_PROMPT_LINE_BYTES), 1):
        size += len(raw)
        if b"\x00" in raw:  # before any other complaint: a binary file should be called binary, not "not UTF-8"
            raise click.ClickException(
                f"{path} line {number}: binary data (NUL byte); expected one text prompt per line"
            )
        if len(raw.rstrip(b"\r\n")) > MAX_PROMPT_LINE_BYTES:
            raise click.ClickException(
                f"{path} line {number}: longer than {MAX_PROMPT_LINE_BYTES} bytes; expected one prompt per line"
            )
        if size > limits.max_bytes:
            raise click.ClickException(
                f"{path}: larger than {limits.max_bytes} bytes (at line {number}); split the file"
            )
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
        except UnicodeDecodeError as exc:  # reported after the whole file is known not to be binary
            bad_text = (
                bad_text
                or f"{path} line {number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            )
            continue
        if line and not line.startswith("#"):
            if len(prompts) == limits.max_prompts:
                raise click.ClickException(
                    f"{path} line {number}: more than {limits.max_prompts} prompts in one file; split the file"
                )
            prompts.append(line)
    if bad_text:
        raise click.ClickException(bad_text)
    return prompts


def _lines(fh, limit: int):
    """The file's lines (bytes.splitlines rules, endings kept), read block by block. A line that grows
    past `limit` bytes, or holds a NUL, is yielded unfinished so the caller refuses it without reading on."""
    tail = b""
    while block := fh.read(_READ_BLOCK):
        *complete, tail = (tail + block).splitlines(keepends=True)  # the last part may continue ("\r" + "\n")
        yield from complete
        if len(tail) > limit + 2 or b"\x00" in tail:
            yield tail
            return
    if tail:
        yield tail


def _load_pipeline(model, threads):
    from ganvas.core.pipeline import Pipeline
    from ganvas.core.threads import configure_threads

    configure_threads(threads)
    return Pipeline.load(model)


class _Bar:
    """One progress bar across several pipeline calls (a prompts file)."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, disable=not enabled, unit="img", file=sys.stderr)
        self.offset = 0

    def callback(self, done: int, total: int) -> None:
        self.bar.n = self.offset + done
        self.bar.refresh()

    def next_call(self, count: int) -> None:
        self.offset += count

    def close(self):
        self.bar.close()


# --- generate -------------------------------------------------------------------------------------------------

REPLAY_CONFLICTS = ("prompt", "n", "seed", "truncation", "style", "size", "prompts_file", "params")


@main.command()
@click.argument("prompt", required=False)
@click.option("-n", "n", type=click.IntRange(min=1), default=1, show_default=True, help="images per prompt")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), help="first seed; image i uses seed+i  [default: random]")
@click.option(
    "--model", help="registered model name or checkpoint folder  [default: $GANVAS_MODEL or the shipped default]"
)
@truncation_option()
@click.option(
    "--style",
    help="style word (`ganvas models` lists each model's), put into the prompt by the model's "
    "prompt template (emoji64: 'PROMPT; STYLE style'); a model without one refuses it",
)
@click.option(
    "--size",
    type=click.IntRange(8, 2048),
    help="output side in pixels: above the model's own, its upsampler (e.g. 64 -> 256), then Lanczos to "
    "the exact side  [default: native]",
)
@click.option("--out", type=click.Path(file_okay=False), default="ganvas-out", show_default=True, help="output folder")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), help="file with one prompt per line")
@click.option(
    "--from-png", "from_png", type=click.Path(dir_okay=False), help="reproduce an image from its ganvas metadata"
)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="plugin option (request.extra); repeatable")
@threads_option
@click.option("--progress/--no-progress", default=None, help="progress bar  [default: on a terminal]")
@debug_option
@click.pass_context
def generate(
    ctx, prompt, n, seed, model, truncation, style, size, out, prompts_file, from_png, params, threads, progress
):
    """Generate images for PROMPT (or each line of --prompts FILE) and print their paths.

    Files are named <prompt-slug>-seed<N>.png and never overwrite earlier ones.

    \b
    Examples:
      ganvas generate "grinning face with big eyes" --style twemoji -n 8 --seed 0
      ganvas generate --prompts prompts.txt -n 4 --out pictures/
      ganvas generate --from-png pictures/grinning-face-with-big-eyes-twemoji-style-seed3.png
    """
    from ganvas.core.requests import GenerationRequest

    if from_png:
        given = [
            name
            for name in REPLAY_CONFLICTS
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"--from-png replays the stored request; it cannot be combined with {', '.join(given)}"
            )
        return _replay(from_png, model, out, threads)
    if bool(prompt) + bool(prompts_file) != 1:
        raise click.UsageError("give a PROMPT, --prompts FILE or --from-png IMAGE (exactly one)")
    prompts = read_prompts_file(prompts_file) if prompts_file else [prompt]
    extra = _parse_params(params)
    pipe = _load_pipeline(model, threads)
    if seed is None:
        from ganvas.core.pipeline import random_seed

        seed = random_seed()
    bar = _Bar(len(prompts) * n, _progress_enabled(progress, len(prompts) * n))
    try:
        for text in prompts:
            request = GenerationRequest(text, n, seed, truncation, model or pipe.name, style, size, "cli", dict(extra))
            result = pipe.generate(request, callback=bar.callback)
            bar.next_call(n)
            for path in result.save(out):
                click.echo(str(path))
    finally:
        bar.close()


def _read_record(path: str) -> dict:
    from ganvas.core.io.png import read_png_text
    from ganvas.core.io.record import read_reproduction_record

    try:
        text = read_png_text(path)
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read as PNG ({exc})") from None
    try:
        return read_reproduction_record(text, path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


class _BadField(click.ClickException):
    """Mistyped --from-png metadata: one line naming the image and the field."""

    def __init__(self, path: str, field: str, problem: str):
        super().__init__(f"{path}: ganvas metadata field {field!r}: {problem}")


def _short(value) -> str:
    return reprlib.repr(value)  # a crafted megabyte-long value stays a short, one-line message


def _replay_request(record: dict, path: str):
    """The stored request, type-checked before anything loads: mistyped metadata is named, not a raw error."""
    from ganvas.core.errors import InvalidRequest
    from ganvas.core.requests import GenerationRequest

    try:
        request = GenerationRequest.from_dict(record["request"])
        request.validate()
    except InvalidRequest as exc:
        raise _BadField(path, f"request.{exc.param}", str(exc)) from None
    except TypeError:  # from_dict without the one required field
        raise _BadField(path, "request.prompt", "missing") from None
    if request.model is not None and not isinstance(request.model, str):
        raise _BadField(path, "request.model", f"must be text, got {_short(request.model)}")
    _check_model_record(record, path)
    if "frame" in record and (type(record["frame"]) is not int or record["frame"] < 0):
        raise _BadField(path, "frame", f"must be a frame index (an integer >= 0), got {_short(record['frame'])}")
    if "interpolate" in request.extra:
        total = _stored_frames(request.extra["interpolate"], path)
        _check_frame_count(
            total,
            lambda limit: click.ClickException(
                f"{path}: the stored interpolation makes {total} frames; the limit is {limit} images per request "
                f"(GANVAS_MAX_N)"
            ),
        )
    request.host = "cli"
    return request


def _check_model_record(record: dict, path: str) -> None:
    model = record.get("model", {})
    if not isinstance(model, dict):
        raise _BadField(path, "model", f"must be an object {{name, path, hash}}, got {_short(model)}")
    for key in ("name", "path", "hash"):
        if model.get(key) is not None and not isinstance(model[key], str):
            raise _BadField(path, f"model.{key}", f"must be text, got {_short(model[key])}")


def _stored_frames(spec, path: str) -> int:
    """Frame count of a stored interpolation spec; ranges and lengths are the pipeline's to check."""
    where = "request.extra.interpolate"
    if not isinstance(spec, dict):
        raise _BadField(path, where, f"must be an object {{prompts, seeds, steps}}, got {_short(spec)}")
    prompts, seeds, steps = spec.get("prompts"), spec.get("seeds"), spec.get("steps", 8)
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise _BadField(path, f"{where}.prompts", f"must be a list of text, got {_short(prompts)}")
    if not isinstance(seeds, list) or not all(type(s) is int for s in seeds):
        raise _BadField(path, f"{where}.seeds", f"must be a list of integers, got {_short(seeds)}")
    if type(steps) is not int or steps < 1:
        raise _BadField(path, f"{where}.steps", f"must be a positive integer, got {_short(steps)}")
    return (max(len(prompts), len(seeds), 1) - 1) * steps + 1


def _check_frame_count(total: int, error) -> None:
    """Refuse an interpolation over the request policy's images-per-request limit before the model loads
    and before any frame exists (the pipeline checks again; this one just answers sooner)."""
    from ganvas.core.plugin_manager import get_plugin_manager

    if "request_policy" not in get_plugin_manager().builtin_names:
        return  # switched off (GANVAS_DISABLE_PLUGINS): no limit to apply
    from ganvas.core.policy import current_policy

    try:
        limit = current_policy().max_n
    except ValueError:
        return  # a misconfigured limit: the pipeline's policy check refuses and says why
    if total > limit:
        raise error(limit)


def _replay(from_png, model, out, threads):
    from ganvas.core.errors import GanvasError, InvalidRequest, ModelNotFound, RequestRefused
    from ganvas.core.pipeline import Pipeline
    from ganvas.core.threads import configure_threads

    record = _read_record(from_png)
    request = _replay_request(record, from_png)
    configure_threads(threads)
    candidates = (
        [model] if model else [request.model, record.get("model", {}).get("path"), record.get("model", {}).get("name")]
    )
    pipe, errors = None, []
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            pipe = Pipeline.load(candidate)
            break
        except ModelNotFound as exc:
            errors.append(str(exc))
    if pipe is None:
        raise GanvasError(errors[0] if errors else f"{from_png}: the metadata names no model; use --model")
    stored_hash = record.get("model", {}).get("hash")
    if stored_hash and stored_hash != pipe.info.hash:
        log.warning(
            "%s was made with model hash %s; %s has hash %s, so pixels may differ",
            from_png,
            stored_hash,
            pipe.name,
            pipe.info.hash,
        )
    request.model = pipe.name
    frames = [record["frame"]] if "frame" in record else None
    try:
        result = pipe.generate(request, frames=frames)
    except (InvalidRequest, RequestRefused) as exc:  # the stored request is at fault: name the image
        raise click.ClickException(f"{from_png}: {exc}") from None
    for path in result.save(out):
        click.echo(str(path))


# --- interpolate ----------------------------------------------------------------------------------------------


def _parse_seeds(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        seeds = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected comma-separated integers like 3,9", param_hint="--seeds"
        ) from None
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds):
        raise click.BadParameter(f"{value!r}: seeds must be integers in 0..{MAX_SEED}", param_hint="--seeds")
    return seeds


@main.command()
@click.argument("prompts", nargs=-1, required=True)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), help="one seed for every key frame  [default: random]")
@click.option("--seeds", "seeds_text", help="key-frame seeds, e.g. 3,9 (walks the noise)")
@click.option("--steps", type=click.IntRange(min=1), default=8, show_default=True, help="frames between key frames")
@click.option("--model", help="registered model name or checkpoint folder")
@truncation_option()
@click.option(
    "--style", help="style word, put into every prompt by the model's prompt template (emoji64: 'PROMPT; STYLE style')"
)
@click.option("--size", type=click.IntRange(8, 2048), help="output side in pixels (above native: the upsampler)")
@click.option("--out", type=click.Path(file_okay=False), default="ganvas-out", show_default=True)
@click.option("--gif", is_flag=True, help="also write an animated GIF of the frames")
@threads_option
@click.option("--progress/--no-progress", default=None, help="progress bar  [default: on a terminal]")
@debug_option
def interpolate(prompts, seed, seeds_text, steps, model, truncation, style, size, out, gif, threads, progress):
    """Frames of a morph between PROMPTS and/or seeds: (keys-1)*steps + 1 PNGs.

    \b
    Examples:
      ganvas interpolate "red heart" "blue heart" --style noto --steps 12 --seed 4 --gif
      ganvas interpolate "fox" --style twemoji --seeds 1,2,3 --steps 6
    """
    seeds = _parse_seeds(seeds_text)
    if seeds and seed is not None:
        raise click.UsageError("give --seed or --seeds, not both")
    keys = max(len(prompts), len(seeds or [0]))
    total = (keys - 1) * steps + 1
    _check_frame_count(
        total,
        lambda limit: click.BadParameter(
            f"{steps} steps make {total} frames; the limit is {limit} images per request (GANVAS_MAX_N)",
            param_hint="'--steps'",
        ),
    )
    pipe = _load_pipeline(model, threads)
    bar = _Bar(total, _progress_enabled(progress, total))
    try:
        result = pipe.interpolate(
            list(prompts),
            steps,
            seed,
            truncation,
            seeds=seeds,
            style=style,
            size=size,
            host="cli",
            callback=bar.callback,
        )
    finally:
        bar.close()
    paths = result.save(out)
    for path in paths:
        click.echo(str(path))
    if gif:
        from ganvas.core.io.png import slug, unique_path

        target = unique_path(Path(out), slug(result.request.prompt), ".gif")
        first, *rest = result.images
        first.save(target, save_all=True, append_images=rest, duration=80, loop=0)
        click.echo(str(target))


# --- upscale ----------------------------------------------------------------------------------------------------


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="ganvas-out", show_default=True, help="output folder")
@click.option(
    "--size",
    type=click.IntRange(8, 2048),
    help="output side in pixels (one upsampler pass, then Lanczos to it)  [default: one pass, e.g. x4]",
)
@click.option("--upsampler", help="registered upsampler name or folder  [default: $GANVAS_UPSAMPLER or automatic]")
@threads_option
@debug_option
def upscale(images, out, size, upsampler, threads):
    """Upscale IMAGES (e.g. your own 64 px sprites) with a GAN upsampler and print the new files.

    Each image is upscaled at its own resolution (up to 512 px a side; nothing is resized to 64 first),
    transparency kept. Files: <name>-x4.png, or <name>-<size>px.png with --size; never overwritten.

    \b
    Examples:
      ganvas upscale sprite.png --out big/
      ganvas upscale icons/*.png --size 128
    """
    from ganvas.core.hosts.cli.upscale import upscale_files
    from ganvas.core.threads import configure_threads

    configure_threads(threads)
    for path in upscale_files(images, out, size, upsampler):
        click.echo(str(path))


@main.command("upsamplers")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@debug_option
def upsamplers_command(as_json):
    """List the registered upsamplers (what --size above a model's resolution uses)."""
    from ganvas.core.plugin_manager import get_plugin_manager

    rows = []
    for name, entry in sorted(get_plugin_manager().upsamplers().items()):
        row = {
            "name": name,
            "plugin": entry.plugin,
            "description": entry.description,
            "path": None,
            "in_resolution": None,
            "out_resolution": None,
        }
        if isinstance(entry.value, (str, os.PathLike)):
            row["path"] = str(entry.value)
            try:
                config = json.loads((Path(entry.value) / "config.json").read_text("utf-8"))
                row["in_resolution"], row["out_resolution"] = config["in_resolution"], config["out_resolution"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no upsamplers registered (ship one under models/upsamplers/<name>/ or install a plugin)", err=True)
    for row in rows:
        res = f"{row['in_resolution']} -> {row['out_resolution']} px" if row["in_resolution"] else "?"
        click.echo(f"{row['name']}\t{res}\t{row['path'] or 'from plugin ' + row['plugin']}")


# --- models / plugins -----------------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@debug_option
def models(as_json):
    """List the registered models (the default is marked)."""
    from ganvas.core.plugin_manager import get_plugin_manager

    default = default_model_name()
    rows = []
    for name, entry in sorted(get_plugin_manager().models().items()):
        row = {
            "name": name,
            "default": name == default,
            "plugin": entry.plugin,
            "description": entry.description,
            "path": None,
            "resolution": None,
            "styles": [],
        }
        if isinstance(entry.value, (str, os.PathLike)):
            row["path"] = str(entry.value)
            try:
                config = json.loads((Path(entry.value) / "config.json").read_text("utf-8"))
                row["resolution"] = config["resolution"]
                row["styles"] = list(trained_styles(config))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no models registered (ship one under models/<name>/ or install a plugin)", err=True)
    for row in rows:
        res = f"{row['resolution']}px" if row["resolution"] else "?"
        where = row["path"] or f"from plugin {row['plugin']}"
        styles = f"\tstyles: {', '.join(row['styles'])}" if row["styles"] else ""
        click.echo(f"{row['name']}{' (default)' if row['default'] else ''}\t{res}\t{where}{styles}")


@main.command("plugins")
@click.option("--all", "include_builtins", is_flag=True, help="include the built-in plugins")
@debug_option
def plugins_command(include_builtins):
    """Installed plugins, their versions and the hooks each implements (JSON)."""
    from ganvas.core.plugin_manager import get_plugin_manager

    click.echo(json.dumps(get_plugin_manager().describe(include_builtins), indent=2))


# --- commands defined elsewhere in core ------------------------------------------------------------------------


def _add_core_commands() -> None:
    from ganvas.core.hosts.cli.train import (
        eval_command,
        eval_upsampler_command,
        train_command,
        train_evaluator_command,
        train_upsampler_command,
    )

    for command in (
        train_command,
        eval_command,
        train_evaluator_command,
        train_upsampler_command,
        eval_upsampler_command,
    ):
        main.add_command(command)


_add_core_commands()

if __name__ == "__main__":
    main()
