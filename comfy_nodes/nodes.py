"""The V3 node classes (comfy_api.latest) and the extension that lists them.

Imported by comfy_entrypoint() inside ComfyUI only. Each execute() imports what it needs (the ganvas
pipeline, torch, ComfyUI's progress and interruption utilities) when it runs; define_schema() only
lists model folders and reads their config.json style words, so building /object_info stays cheap.

Validation. ComfyUI reports a validate_inputs() message once for *each* input the function declares (as
"custom_validation_failed" with that input's name), so every validate_inputs here declares exactly the
one input it judges: a message appears once, under that input. Limits that involve two fields are kept
out of validate_inputs: the seed's maximum leaves room for the largest batch (ComfyUI's own min/max check
then names `seed`), and the rest is checked when the node runs, before anything is drawn, with the
field named in the message. ComfyUI 0.3.64 does not check V3 combo values itself (later versions do, for
every combo not declared in validate_inputs), so `device` and `style` values that no list offers (API
prompts only) are refused when the node runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from comfy_api.latest import ComfyExtension, io, ui

from . import CATEGORY, CONDITIONING_TYPE, METADATA_TYPE, MODEL_TYPE, generation, memory, model_folders, saving
from .conditioning import mix

MAX_SEED = 2**53 - 1  # == ganvas.core.requests.MAX_SEED (not imported: keeps define_schema light)
MAX_BATCH = 100  # == the request policy's default n limit (GANVAS_MAX_N)
GENERATE_MAX_SEED = MAX_SEED - (MAX_BATCH - 1)  # image i uses seed + i: every batch stays within MAX_SEED
DEVICES = ("cpu", "comfyui")
LIST_LIMIT = 24  # names listed in a "not found" message

GanvasModel = io.Custom(MODEL_TYPE)
GanvasConditioning = io.Custom(CONDITIONING_TYPE)
GanvasMetadata = io.Custom(METADATA_TYPE)
log = logging.getLogger("ganvas.comfy")


def _on_image(total: int):
    """Per-image callback: stop when the user cancels, and move ComfyUI's progress bar."""
    import comfy.model_management
    import comfy.utils

    comfy.model_management.throw_exception_if_processing_interrupted()
    bar = comfy.utils.ProgressBar(total)

    def on_image(done: int, _total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total)

    return on_image


def _device(choice: str) -> str:
    if choice == "comfyui":
        import comfy.model_management

        return str(comfy.model_management.get_torch_device())
    if choice != "cpu":
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {choice!r}")
    return "cpu"


def _pipeline(model, field: str = "model"):
    return memory.ready(generation.require_pipeline(model, field))


def _listing(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:LIST_LIMIT])
    return shown + (f" and {len(names) - LIST_LIMIT} more" if len(names) > LIST_LIMIT else "")


def _truncation_input():
    return io.Float.Input(
        "truncation", default=1.0, min=0.01, max=1.0, step=0.01, tooltip="psi: lower = more typical, less varied images"
    )


def _style_input():
    options, default = model_folders.style_options()
    return io.Combo.Input(
        "style",
        options=options,
        default=default,
        tooltip="style word, put into the prompt by the model's prompt template (emoji64: "
        "'PROMPT; STYLE style', as its training captions end; none: no style). The list "
        "holds the styles the offered checkpoints were trained with, the default "
        "model's first; the model you load must know the one you pick (a model without "
        "a prompt template, such as shapes, takes none)",
    )


def _size_input():
    # Optional, so API prompts saved before the input existed still run (at the native size).
    return io.Combo.Input(
        "size",
        options=list(generation.GENERATE_SIZES),
        default=generation.NATIVE,
        optional=True,
        tooltip="output side in pixels. native: the model's own (64 for emoji64). Above it the "
        "model's upsampler makes the image (x4: 64 -> 256 px), then a Lanczos resize to "
        "the exact side (128: down from 256; 512: up from 256, a plain resize of the "
        "upsampled image). Same pixels as `ganvas generate --size`",
    )


def _image_outputs(images_name: str) -> list:
    return [
        io.Image.Output(display_name=images_name, tooltip="RGB, 0..1 (straight colour for transparent models)"),
        io.Mask.Output(
            display_name="mask",
            tooltip="1 - alpha, [B, H, W]; all zeros for RGB models. Join Image "
            "with Alpha + Save Image writes the model's RGBA PNG",
        ),
        GanvasMetadata.Output(
            display_name="metadata", tooltip="for Ganvas Save: the PNG fields `ganvas generate` writes, per image"
        ),
    ]


def _image_node_output(rendered: generation.Rendered, *extra) -> io.NodeOutput:
    for warning in rendered.warnings:
        log.warning("ganvas: %s", warning)
    images = generation.to_image_batch(rendered.images)
    mask = generation.to_mask_batch(rendered.images)
    return io.NodeOutput(images, *extra, mask, saving.metadata_of(rendered.images))


class GanvasModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        choices = model_folders.model_choices()
        return io.Schema(
            node_id="GanvasModelLoader",
            display_name="Ganvas Model Loader",
            category=CATEGORY,
            description="Load a ganvas text-to-image GAN: a checkpoint folder (config.json + model.safetensors) "
            "under models/ganvas, or a model ganvas ships or a plugin registers.",
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=choices,
                    default=model_folders.default_choice(choices),
                    tooltip="checkpoint folders under models/ganvas (and extra_model_paths.yaml "
                    "'ganvas:' entries), then ganvas's registered models",
                ),
                io.Combo.Input(
                    "device",
                    options=list(DEVICES),
                    default="cpu",
                    tooltip="cpu: pixel-identical to `ganvas generate`; comfyui: ComfyUI's device "
                    "(GPU when it has one; pixels may differ by a level)",
                ),
            ],
            outputs=[GanvasModel.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        # Only model_name is declared: ComfyUI repeats a message under every declared input (see the top).
        problem = generation.ganvas_problem()
        if problem:
            return problem
        if not isinstance(model_name, str) or not model_name:
            return f"model_name must be the name of a ganvas model, got {model_name!r}"
        choices = model_folders.model_choices()
        if model_name not in choices:
            return (
                f"ganvas model {model_name!r} not found: put its checkpoint folder (config.json + "
                f"model.safetensors) in ComfyUI's models/{model_folders.FOLDER_NAME} folder or in a "
                f"'{model_folders.FOLDER_NAME}:' folder of extra_model_paths.yaml; available: {_listing(choices)}"
            )
        return True

    @classmethod
    def fingerprint_inputs(cls, model_name, device):
        return f"{model_folders.fingerprint(model_name)}|{device}"

    @classmethod
    def execute(cls, model_name, device="cpu") -> io.NodeOutput:
        source = model_folders.model_source(model_name)
        target = _device(device)
        pipe, fresh = memory.load(source, target, model_folders.fingerprint(model_name))
        if fresh:
            import torch

            colour = "RGBA" if pipe.info.channels == 4 else "RGB"
            log.info(
                "ganvas: loaded model %r (%d px, %s, hash %s) on %s; it renders at %d torch thread(s) "
                "(ComfyUI's torch uses %d)",
                model_name,
                pipe.resolution,
                colour,
                pipe.info.hash,
                target,
                pipe.threads or generation.require_ganvas().default_threads(),
                torch.get_num_threads(),
            )
        return io.NodeOutput(pipe)


class GanvasGenerate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GanvasGenerate",
            display_name="Ganvas Generate",
            category=CATEGORY,
            description="Text to image in one GAN forward pass per image. Image i uses seed + i, so a seed "
            "gives the same picture alone or in a batch, and the same as `ganvas generate`.",
            inputs=[
                GanvasModel.Input("model"),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="fox",
                    tooltip="what to draw, e.g. fox, red heart, grinning face (ignored when a "
                    "conditioning is connected)",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=GENERATE_MAX_SEED,
                    control_after_generate=True,
                    tooltip=f"seed of the first image; image i uses seed + i (so the largest seed "
                    f"leaves room for a batch of {MAX_BATCH})",
                ),
                io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH),
                _truncation_input(),
                _style_input(),
                GanvasConditioning.Input(
                    "conditioning",
                    optional=True,
                    tooltip="from Ganvas Encode Prompt / Mix Prompts; replaces the prompt",
                ),
                _size_input(),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="RGB, 0..1 (straight colour for transparent models)"),
                io.String.Output(display_name="seeds", tooltip="the seed of each image, comma-separated"),
                *_image_outputs("images")[1:],
            ],
        )

    @classmethod
    def validate_inputs(cls, prompt):
        # The prompt alone (the style suffix is counted again when the node runs; see the top).
        if generation.ganvas_problem():
            return True  # the Ganvas Model Loader says how to install ganvas
        return generation.prompt_problem(prompt, "prompt") or True

    @classmethod
    def execute(
        cls, model, prompt, seed, batch_size, truncation, style="none", conditioning=None, size=generation.NATIVE
    ) -> io.NodeOutput:
        rendered = generation.render(
            _pipeline(model),
            prompt,
            seed,
            batch_size,
            truncation,
            style,
            conditioning,
            on_image=_on_image(batch_size),
            size=size,
        )
        return _image_node_output(rendered, generation.seeds_text(rendered.seeds))


class GanvasInterpolate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GanvasInterpolate",
            display_name="Ganvas Interpolate",
            category=CATEGORY,
            description="A morph from one prompt and seed to another as an IMAGE batch (for video and GIF "
            "nodes). The first and last frames equal Ganvas Generate's images for those prompts "
            "and seeds.",
            inputs=[
                GanvasModel.Input("model"),
                io.String.Input("prompt_from", multiline=True, default="red heart"),
                io.String.Input(
                    "prompt_to",
                    multiline=True,
                    default="blue heart",
                    tooltip="empty: keep prompt_from and walk the noise only",
                ),
                io.Int.Input("seed_from", default=0, min=0, max=MAX_SEED, control_after_generate=True),
                io.Int.Input(
                    "seed_to",
                    default=0,
                    min=0,
                    max=MAX_SEED,
                    control_after_generate=True,
                    tooltip="equal to seed_from: the noise stays, only the text changes",
                ),
                io.Int.Input("frames", default=9, min=2, max=MAX_BATCH, tooltip="frames including both ends"),
                _truncation_input(),
                _style_input(),
            ],
            outputs=_image_outputs("frames"),
        )

    @classmethod
    def execute(
        cls, model, prompt_from, prompt_to, seed_from, seed_to, frames, truncation, style="none"
    ) -> io.NodeOutput:
        rendered = generation.render_interpolation(
            _pipeline(model),
            prompt_from,
            prompt_to,
            seed_from,
            seed_to,
            frames,
            truncation,
            style,
            on_image=_on_image(frames),
        )
        return _image_node_output(rendered)


class GanvasEncodePrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GanvasEncodePrompt",
            display_name="Ganvas Encode Prompt",
            category=CATEGORY,
            description="Encode a prompt with the model's text encoder into a conditioning for Ganvas Generate "
            "or Ganvas Mix Prompts.",
            inputs=[
                GanvasModel.Input("model"),
                io.String.Input("text", multiline=True, default="red heart"),
            ],
            outputs=[GanvasConditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def validate_inputs(cls, text):
        if generation.ganvas_problem():
            return True
        return generation.prompt_problem(text, "text") or True

    @classmethod
    def execute(cls, model, text) -> io.NodeOutput:
        return io.NodeOutput(generation.encode(_pipeline(model), text))


class GanvasMixPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GanvasMixPrompts",
            display_name="Ganvas Mix Prompts",
            category=CATEGORY,
            description="Blend two encoded prompts: weight 0 is conditioning_a, 1 is conditioning_b. The weight "
            "is rounded to a fraction k/n with n <= 50 (exact in steps of 0.02).",
            inputs=[
                GanvasConditioning.Input("conditioning_a"),
                GanvasConditioning.Input("conditioning_b"),
                io.Float.Input("weight", default=0.5, min=0.0, max=1.0, step=0.02, tooltip="share of conditioning_b"),
            ],
            outputs=[GanvasConditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, conditioning_a, conditioning_b, weight) -> io.NodeOutput:
        mixed = mix(conditioning_a, conditioning_b, weight)
        if mixed.is_mix:
            mixed = replace(mixed, vector=generation.mixed_vector(conditioning_a, conditioning_b, mixed.weight))
        return io.NodeOutput(mixed)


class GanvasUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GanvasUpscale",
            display_name="Ganvas Upscale",
            category=CATEGORY,
            description="Upscale any IMAGE (with its MASK as transparency) with ganvas's upsampler: one pass "
            "(x4 for the shipped upsampler, aspect ratio kept) or to a square side (upsampler, then "
            "Lanczos to the exact side). Ganvas Generate at size 64 followed by this node at 256 "
            "equals Ganvas Generate at size 256, pixel for pixel.",
            inputs=[
                io.Image.Input("images", tooltip="any IMAGE batch (RGB, 0..1), up to 512 px a side"),
                io.Combo.Input(
                    "size",
                    options=list(generation.UPSCALE_SIZES),
                    default=generation.UPSCALE_SIZES[0],
                    tooltip="x scale: one upsampler pass (each side times the upsampler's scale); a "
                    "number: a square side in pixels (the upsampler, then Lanczos; at or below "
                    "the image's side a plain Lanczos resize). Non-square images take x scale",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="1 - alpha, as Ganvas Generate's mask output or Load Image's: the image is "
                    "upscaled as RGBA and the upscaled transparency comes out as the mask",
                ),
                GanvasModel.Input(
                    "model",
                    optional=True,
                    tooltip="the ganvas model whose upsampler is used (the one trained for its "
                    "resolution); not connected: the default model's",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="RGB, 0..1 (straight colour when a mask was given)"),
                io.Mask.Output(
                    display_name="mask", tooltip="1 - alpha of the upscaled images; all zeros without an input mask"
                ),
            ],
        )

    @classmethod
    def execute(cls, images, size="x scale", mask=None, model=None) -> io.NodeOutput:
        pipe = _pipeline(model) if model is not None else _default_pipeline()
        upscaled = generation.upscale(pipe, images, mask, size, on_image=_on_image(len(images)))
        return io.NodeOutput(generation.to_image_batch(upscaled), generation.to_mask_batch(upscaled))


def _default_pipeline():
    """The default model's pipeline (ganvas's default, on the CPU), for nodes whose model input is optional."""
    generation.require_ganvas()
    name = model_folders.default_model()
    pipe, _ = memory.load(model_folders.model_source(name), "cpu", model_folders.fingerprint(name))
    return memory.ready(pipe)


class GanvasSave(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="GanvasSave",
            display_name="Ganvas Save",
            category=CATEGORY,
            description="Save PNGs that `ganvas generate --from-png` replays: ganvas's metadata (prompt, seed, "
            "model, A1111 `parameters`, the replay record), ComfyUI's prompt and workflow, and the "
            "model's transparency. An image changed after Ganvas Generate is saved without the "
            "ganvas fields (they would replay to other pixels).",
            inputs=[
                io.Image.Input("images"),
                GanvasMetadata.Input("metadata", tooltip="the metadata output of Ganvas Generate or Interpolate"),
                io.String.Input(
                    "filename_prefix",
                    default="ganvas",
                    tooltip="file name prefix; may include a subfolder and ComfyUI's %date:...% "
                    "formatting, as in Save Image",
                ),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo, io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, metadata, filename_prefix="ganvas") -> io.NodeOutput:
        import folder_paths
        from comfy.cli_args import args

        if not isinstance(metadata, saving.GanvasMetadata):
            raise TypeError(
                f"metadata is {'null' if metadata is None else type(metadata).__name__}: connect the "
                f"metadata output of Ganvas Generate or Ganvas Interpolate"
            )
        folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), images[0].shape[1], images[0].shape[0]
        )
        paths = []
        for number in range(len(images)):
            paths.append(os.path.join(folder, f"{stem.replace('%batch_num%', str(number))}_{counter + number:05}_.png"))
        comfy = saving.comfy_fields(cls.hidden.prompt, cls.hidden.extra_pnginfo)
        saved = saving.save_images(images, metadata, paths, comfy, with_metadata=not args.disable_metadata)
        plain = [s.path.name for s in saved if not s.with_ganvas]
        if plain and not args.disable_metadata:
            note = (
                f"{len(plain)} of {len(saved)} images saved without ganvas metadata: their pixels are not the "
                f"ones Ganvas Generate made (changed on the way?), so a replay would differ"
            )
            log.warning("ganvas: %s (%s)", note, ", ".join(plain))
            _show_text(note, cls.hidden.unique_id)
        results = [ui.SavedResult(s.path.name, subfolder, io.FolderType.output) for s in saved]
        return io.NodeOutput(ui=ui.SavedImages(results))


def _show_text(text: str, node_id) -> None:
    """Text under the node in ComfyUI's UI (best effort: older servers lack it)."""
    try:
        from server import PromptServer

        PromptServer.instance.send_progress_text(text, node_id)
    except Exception:
        pass


NODES = [
    GanvasModelLoader,
    GanvasGenerate,
    GanvasInterpolate,
    GanvasEncodePrompt,
    GanvasMixPrompts,
    GanvasSave,
    GanvasUpscale,
]


class GanvasExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
