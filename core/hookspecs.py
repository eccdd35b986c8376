"""Hook specifications: the whole plugin contract of ganvas (pluggy project name "ganvas").

Rules shared by every hook:
- An implementation may accept fewer arguments than the spec (pluggy passes only those it names), so
  new arguments can be added later without breaking plugins.
- None of these hooks is `firstresult`: every implementation runs. Order is pluggy's: plugins loaded
  from entry points run before the built-ins (the built-ins are marked `trylast=True`).
- The manager (core/plugins.py) calls implementations one at a time: one that raises is reported as
  "plugin <name> failed in <hook>: <error>" and skipped. The only exception that passes through is
  `RequestRefused` from `ganvas_check_request`, which refuses the request.
- Hook wrappers (`wrapper=True` / `hookwrapper=True`) are not supported on these hooks.

docs/plugins.md has a runnable example of each hook; tests/test_docs.py fails if one is missing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Protocol, Union

import pluggy

if TYPE_CHECKING:
    import click
    from PIL import Image

    from ganvas.core.requests import GenerationRequest, GenerationResult

PROJECT = "ganvas"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# A model source: a checkpoint folder, or a zero-argument callable returning a folder or a generator
# module (an nn.Module with `.config.z_dim`, `.config.resolution`, `.config.text_encoder`, called as
# G(z, text) -> images in [-1, 1]).
ModelSource = Union[str, os.PathLike, Callable[[], Any]]


class RegisterModel(Protocol):
    def __call__(self, name: str, source: ModelSource, *, description: str = "") -> None: ...


class RegisterTextEncoder(Protocol):
    def __call__(self, name: str, factory: Callable[[], Any]) -> None: ...


class RegisterUpsampler(Protocol):
    def __call__(self, name: str, source: ModelSource, *, description: str = "") -> None: ...


class RegisterDataset(Protocol):
    def __call__(self, name: str, loader: Callable[..., Any], *, description: str = "") -> None: ...


@hookspec
def ganvas_register_models(register: RegisterModel) -> None:
    """Add named models.

    :param register: ``register(name, source, description="")``. ``source`` is a checkpoint folder
        (config.json + model.safetensors) or a zero-argument loader returning a folder or a generator
        module. The loader runs only when the model is first used.
    :return: nothing. When two plugins register one name, the first call wins (third-party plugins run
        before the built-in backend, so they can replace a shipped model).
    """


@hookspec
def ganvas_register_text_encoders(register: RegisterTextEncoder) -> None:
    """Add text encoders, by the name a checkpoint's config.json gives in ``text_encoder``.

    :param register: ``register(name, factory)``; ``factory()`` returns an object with
        ``encode(list_of_str)`` giving a (N, D) float tensor or an object with ``.sentence`` (N, D).
        Called once per process, lazily; the pipeline caches embeddings per prompt. ``ganvas train
        --text-encoder NAME`` trains with it (the model records NAME) and ``ganvas eval`` embeds with it.
    :return: nothing. First registration of a name wins.
    """


@hookspec
def ganvas_check_request(request: GenerationRequest) -> None:
    """Accept or refuse a (prepared) request before anything is generated.

    :param request: the request after ``ganvas_prepare_request``.
    :return: nothing. Raise ``ganvas.core.requests.RequestRefused(reason, param=None)`` to refuse;
        the reason reaches the user. Every implementation runs; any other exception is reported and
        skipped (a broken policy plugin does not block generation).
    """


@hookspec
def ganvas_prepare_request(request: GenerationRequest) -> GenerationRequest | None:
    """Normalise or rewrite a request before it is checked and generated.

    :param request: a private copy of the request; edit it in place or return a replacement.
    :return: None (kept as edited) or a new GenerationRequest, which the next implementation receives
        (chained). Should be idempotent: ``--from-png`` replays the host's original request.
    """


@hookspec
def ganvas_postprocess(image: Image.Image, request: GenerationRequest, index: int) -> Image.Image | None:
    """Post-process one generated image (upscale, filter, watermark, ...).

    :param image: the RGB PIL image so far (the previous implementation's output).
    :param request: the prepared request.
    :param index: position of the image in the result (seed = request.seed + index).
    :return: a new image, or None to leave it unchanged. Chained: each implementation sees the last one's
        output. Metadata is attached after post-processing, so it survives.
    """


@hookspec
def ganvas_image_metadata(request: GenerationRequest, result: GenerationResult, index: int) -> dict[str, str] | None:
    """PNG text fields for one image.

    :param request: the prepared request.
    :param result: the result being assembled (images post-processed, seeds, model, timings so far).
    :param index: which image.
    :return: a dict of text-chunk keyword -> text, or None. All dicts are merged; for the same key a
        third-party plugin's value wins over a built-in's. Keys must be 1-79 Latin-1 characters.
    """


@hookspec
def ganvas_after_generate(result: GenerationResult) -> None:
    """Sinks: history, logging, notifications. Runs once per result, after metadata is attached.

    :param result: the finished result.
    :return: nothing. Keep it fast: it runs inside the caller's request.
    """


@hookspec
def ganvas_register_commands(cli: click.Group) -> None:
    """Add commands to the ``ganvas`` command line.

    :param cli: the root click group; use ``@cli.command()``.
    :return: nothing.
    """


@hookspec
def ganvas_register_datasets(register: RegisterDataset) -> None:
    """Add dataset formats for training and evaluation.

    :param register: ``register(name, loader, description="")``; ``loader(path, resolution, **options)``
        returns a ``ganvas.core.datasets.folders.CaptionedImages`` of ``resolution`` px images. ``ganvas
        train``/``train-evaluator``/``eval`` call it for ``--data NAME`` (path None) or ``--data NAME:PATH``;
        it receives only the options its signature names: ``subset``, ``split``, ``channels``, ``seed``,
        ``size``, ``workers`` (meanings in core/datasets/formats.py and docs/plugins.md).
    :return: nothing. First registration of a name wins.
    """


@hookspec
def ganvas_register_upsamplers(register: RegisterUpsampler) -> None:
    """Add named upsamplers: what ``size`` above a model's native resolution and ``Pipeline.upscale`` use.

    :param register: ``register(name, source, description="")``. ``source`` is an upsampler checkpoint
        folder (config.json with an ``"upsampler"`` section + model.safetensors, as
        ``ganvas train-upsampler`` writes) or a zero-argument loader returning a folder or an nn.Module
        with ``.config.scale``, ``.config.channels`` (3 or 4) and ``.config.in_resolution``, called as
        ``module(x)`` on (N, C, H, W) floats in [-1, 1] (premultiplied RGBA when C == 4) and returning
        (N, C, H * scale, W * scale). Loaders run on first use.
    :return: nothing. The first registration of a name wins; third-party plugins run before the built-in
        backend, so theirs is also the first candidate when a pipeline picks an upsampler for its model's
        resolution (``GANVAS_UPSAMPLER`` or ``Pipeline.load(..., upsampler=NAME)`` name one explicitly).
    """


HOOK_NAMES = tuple(name for name in list(globals()) if name.startswith("ganvas_"))
