"""The V3 node classes (comfy_api.latest) and the extension that lists them.

Imported by comfy_entrypoint() inside ComfyUI only. Each execute() imports what it needs (the ganvas
pipeline, torch, ComfyUI's progress and interruption utilities) when it runs; define_schema() only
lists model folders, so building /object_info stays cheap.
"""
from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import ComfyExtension, io

from . import CATEGORY, CONDITIONING_TYPE, MODEL_TYPE, generation, model_folders
from .conditioning import mix

MAX_SEED = 2 ** 53 - 1   # == ganvas.core.requests.MAX_SEED (not imported: keeps define_schema light)
MAX_BATCH = 100          # == the request policy's default n limit (GANVAS_MAX_N)
DEVICES = ("cpu", "comfyui")

GanvasModel = io.Custom(MODEL_TYPE)
GanvasConditioning = io.Custom(CONDITIONING_TYPE)


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


def _truncation_input():
    return io.Float.Input("truncation", default=1.0, min=0.01, max=1.0, step=0.01,
                          tooltip="psi: lower = more typical, less varied images")


def _style_input():
    return io.String.Input("style", default="", tooltip='style word; appends "; STYLE style" to the prompt '
                                                        "(empty: none)")


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
                io.Combo.Input("model_name", options=choices, default=model_folders.default_choice(choices),
                               tooltip="checkpoint folders under models/ganvas (and extra_model_paths.yaml "
                                       "'ganvas:' entries), then ganvas's registered models"),
                io.Combo.Input("device", options=list(DEVICES), default="cpu",
                               tooltip="cpu: pixel-identical to `ganvas generate`; comfyui: ComfyUI's device "
                                       "(GPU when it has one; pixels may differ by a level)"),
            ],
            outputs=[GanvasModel.Output(display_name="model")],
        )

    @classmethod
    def validate_inputs(cls, model_name, device):
        # ComfyUI (pinned 0.3.64) does not check V3 combo values against their options itself
        if device not in DEVICES:
            return f"device must be one of {', '.join(DEVICES)}, got {device!r}"
        choices = model_folders.model_choices()
        if model_name not in choices:
            where = ", ".join(model_folders.comfy_bases()) or f"models/{model_folders.FOLDER_NAME}"
            return (f"ganvas model {model_name!r} not found: put its checkpoint folder (config.json + "
                    f"model.safetensors) in {where}; available: {', '.join(choices) or 'none'}")
        return True

    @classmethod
    def fingerprint_inputs(cls, model_name, device):
        return f"{model_folders.fingerprint(model_name)}|{device}"

    @classmethod
    def execute(cls, model_name, device="cpu") -> io.NodeOutput:
        source = model_folders.model_source(model_name)
        return io.NodeOutput(generation.load_pipeline(source, _device(device)))


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
                io.String.Input("prompt", multiline=True, default="a red circle",
                                tooltip="what to draw (ignored when a conditioning is connected)"),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="seed of the first image; image i uses seed + i"),
                io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH),
                _truncation_input(),
                _style_input(),
                GanvasConditioning.Input("conditioning", optional=True,
                                         tooltip="from Ganvas Encode Prompt / Mix Prompts; replaces the prompt"),
            ],
            outputs=[
                io.Image.Output(display_name="images"),
                io.String.Output(display_name="seeds", tooltip="the seed of each image, comma-separated"),
            ],
        )

    @classmethod
    def execute(cls, model, prompt, seed, batch_size, truncation, style, conditioning=None) -> io.NodeOutput:
        images, seeds = generation.generate(model, prompt, seed, batch_size, truncation, style, conditioning,
                                            on_image=_on_image(batch_size))
        return io.NodeOutput(generation.to_image_batch(images), generation.seeds_text(seeds))


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
                io.String.Input("prompt_from", multiline=True, default="a red circle"),
                io.String.Input("prompt_to", multiline=True, default="a blue square",
                                tooltip="empty: keep prompt_from and walk the noise only"),
                io.Int.Input("seed_from", default=0, min=0, max=MAX_SEED, control_after_generate=True),
                io.Int.Input("seed_to", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="equal to seed_from: the noise stays, only the text changes"),
                io.Int.Input("frames", default=9, min=2, max=MAX_BATCH, tooltip="frames including both ends"),
                _truncation_input(),
                _style_input(),
            ],
            outputs=[io.Image.Output(display_name="frames")],
        )

    @classmethod
    def execute(cls, model, prompt_from, prompt_to, seed_from, seed_to, frames, truncation, style) -> io.NodeOutput:
        images = generation.interpolate(model, prompt_from, prompt_to, seed_from, seed_to, frames, truncation, style,
                                        on_image=_on_image(frames))
        return io.NodeOutput(generation.to_image_batch(images))


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
                io.String.Input("text", multiline=True, default="a red circle"),
            ],
            outputs=[GanvasConditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, model, text) -> io.NodeOutput:
        return io.NodeOutput(generation.encode(model, text))


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


NODES = [GanvasModelLoader, GanvasGenerate, GanvasInterpolate, GanvasEncodePrompt, GanvasMixPrompts]


class GanvasExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
