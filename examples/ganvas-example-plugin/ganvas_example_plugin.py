"""An example ganvas plugin: one module, registered through the entry-point group "ganvas".

Keep module import cheap (no torch at import time): `ganvas plugins` and `ganvas --help` load every
plugin, and the heavy work belongs inside the hooks.
"""

from __future__ import annotations

import json
import os

import click

from ganvas.core.errors import RequestRefused
from ganvas.core.hookspecs import hookimpl

MODEL_NAME = "example-tiny"
REFUSED_WORD = "forbidden"


def build_tiny_model():
    """A 32 px generator with fixed random weights: enough to demonstrate a model that has no files."""
    import torch

    from ganvas.core.model.config import ModelConfig
    from ganvas.core.model.networks import Generator

    with torch.random.fork_rng(devices=[]):  # do not disturb the host's random state
        torch.manual_seed(1234)
        generator = Generator(ModelConfig(resolution=32, z_dim=16, g_channels=8, d_channels=8, cond_dim=32, max_mult=4))
        for name, param in generator.named_parameters():
            if ".proj." in name:  # the text modulation starts at zero; give the prompt some effect
                torch.nn.init.normal_(param, std=0.05)
    return generator


@hookimpl
def ganvas_register_models(register):
    register(MODEL_NAME, build_tiny_model, description="random 32 px generator built in code (demo)")


@hookimpl
def ganvas_check_request(request):
    if REFUSED_WORD in request.prompt.lower():
        raise RequestRefused(f"the example plugin refuses prompts containing {REFUSED_WORD!r}", param="prompt")


@hookimpl
def ganvas_postprocess(image, request, index):
    if request.extra.get("grayscale"):
        return image.convert("L").convert("RGB")
    return None  # unchanged


@hookimpl
def ganvas_image_metadata(request, result, index):
    return {"example_plugin": f"ganvas-example-plugin saw image {index} (seed {result.seeds[index]})"}


@hookimpl
def ganvas_after_generate(result):
    path = os.environ.get("GANVAS_EXAMPLE_HISTORY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(
                json.dumps({"prompt": result.request.prompt, "seeds": result.seeds, "model": result.model.name}) + "\n"
            )


@hookimpl
def ganvas_register_commands(cli):
    @cli.command(name="example-hello")
    @click.argument("name", default="world")
    def example_hello(name):
        """Say hello (a command added by ganvas-example-plugin)."""
        click.echo(f"hello {name} from ganvas-example-plugin")
