"""Meta-tests: every hook has a test and documentation, and the documented examples really work."""

from __future__ import annotations

import ast
import inspect
import re
import types
from pathlib import Path

import click
from click.testing import CliRunner
from conftest import save_tiny_checkpoint
from PIL import Image

from ganvas.core import hookspecs
from ganvas.core.hookspecs import HOOK_NAMES
from ganvas.core.pipeline import Pipeline
from ganvas.core.plugin_manager import GanvasPlugins

REPO = Path(__file__).resolve().parent.parent
PLUGINS_DOC = REPO / "docs" / "plugins.md"
HEADING = re.compile(r"^### `(ganvas_\w+)\(([^)]*)\)`\s*$", re.MULTILINE)


def documented_hooks() -> dict[str, tuple[list[str], str]]:
    """hook -> (documented argument names, the section's first python code block)."""
    text = PLUGINS_DOC.read_text(encoding="utf-8")
    matches = list(HEADING.finditer(text))
    sections = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].split("\n## ", 1)[0]
        code = re.search(r"```python\n(.*?)```", body, re.DOTALL)
        args = [a.strip() for a in match.group(2).split(",") if a.strip()]
        sections[match.group(1)] = (args, code.group(1) if code else "")
    return sections


def test_hooks_exist():
    assert len(HOOK_NAMES) == 10 and {"ganvas_register_models", "ganvas_register_upsamplers"} <= set(HOOK_NAMES)


def test_every_hook_has_a_test():
    names = set()
    for path in (REPO / "tests").glob("test_*.py"):
        names |= {
            node.name
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.FunctionDef)
        }
    missing = [hook for hook in HOOK_NAMES if f"test_hook_{hook}" not in names]
    assert not missing, f"hooks without a test_hook_<name> test: {missing}"


def test_every_hook_is_documented_with_its_signature():
    sections = documented_hooks()
    missing = [hook for hook in HOOK_NAMES if hook not in sections]
    assert not missing, f"hooks without a section in docs/plugins.md: {missing}"
    unknown = [name for name in sections if name not in HOOK_NAMES]
    assert not unknown, f"docs/plugins.md documents hooks that do not exist: {unknown}"
    for hook, (args, code) in sections.items():
        spec_args = list(inspect.signature(getattr(hookspecs, hook)).parameters)
        assert args == spec_args, f"{hook}: documented ({', '.join(args)}), spec ({', '.join(spec_args)})"
        assert f"def {hook}(" in code, f"{hook}: its section has no python example implementing it"


def test_every_hookspec_docstring_covers_arguments_and_return():
    for hook in HOOK_NAMES:
        doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
        for arg in inspect.signature(getattr(hookspecs, hook)).parameters:
            assert f":param {arg}:" in doc, f"{hook}: docstring does not describe {arg}"
        assert ":return:" in doc, f"{hook}: docstring does not say what it returns"


def test_architecture_doc_lists_every_hook():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert [hook for hook in HOOK_NAMES if hook not in text] == []


def test_documented_examples_run(tmp_path, monkeypatch):
    """Each hook's example, executed as a plugin module, registered and exercised for real."""
    monkeypatch.setenv("GANVAS_AUTHOR", "Docs Test")
    manager = GanvasPlugins(entry_points=False, env={})
    for hook, (_args, code) in documented_hooks().items():
        module = types.ModuleType(f"docs_example_{hook}")
        exec(compile(code, f"docs/plugins.md ({hook})", "exec"), module.__dict__)
        assert manager.register(module, f"docs-{hook}"), manager.failed
        assert hook in [c.name for c in manager.pm.get_hookcallers(module)]
    assert manager.failed == [] and manager.notes == []

    # text encoder + models + prepare + check + postprocess + metadata + after_generate
    folder = save_tiny_checkpoint(tmp_path / "hash-model", text_encoder="hash384")
    pipe = Pipeline.load(str(folder), plugins=manager)
    result = pipe("a :)", n=2, seed=3, extra={"pixel_upscale": 2})
    assert result.warnings == []
    assert result.request.prompt == "a smiling face"
    assert result.images[0].size == (66, 66)
    assert result.metadata[1]["Author"] == "Docs Test" and result.metadata[1]["ganvas_seed_of_batch"] == "3"
    from ganvas.core.errors import RequestRefused

    try:
        pipe(" ".join(["word"] * 41), seed=1)
        raise AssertionError("the documented check did not refuse")
    except RequestRefused as refusal:
        assert refusal.plugin == "docs-ganvas_check_request"
    assert "portraits64" not in manager.models() or (Path.home() / "ganvas-models").exists()

    # commands
    group = click.Group("ganvas")
    manager.register_commands(group)
    out = CliRunner().invoke(group, ["seeds-for", "a cat", "-n", "2"]).output.split()
    assert len(out) == 2 and int(out[1]) == int(out[0]) + 1

    # datasets
    images = tmp_path / "named"
    images.mkdir()
    Image.new("RGB", (40, 40), "red").save(images / "red square.png")
    data = manager.datasets()["named-files"].value(images, 32)
    assert data.captions == ["red square"] and tuple(data.images.shape) == (1, 3, 32, 32)
