"""Checkpoint folders (config.json + model.safetensors + README.md) and resumable training state.

Everything is safetensors + JSON: loading never unpickles, so a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ganvas.core.io import atomic
from ganvas.core.model.config import ModelConfig
from ganvas.core.model.networks import Generator
from ganvas.core.model.upsampler import ARCHITECTURE as UPSAMPLER_ARCHITECTURE
from ganvas.core.model.upsampler import Upsampler, UpsamplerConfig, is_upsampler_config

FORMAT = "ganvas.checkpoint"
FORMAT_VERSION = 1
ARCHITECTURE = "dfgan-v1"


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used; the message names the file and the problem."""


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> Path:
    """save_file through the one atomic writer (core/io/atomic.py): a crash leaves the old file or the new."""
    with atomic.atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def save_model(
    folder: str | os.PathLike,
    generator: Generator,
    trained: dict | None = None,
    card: str | None = None,
    prompt_template: str | None = None,
) -> Path:
    """Write the inference checkpoint folder from a (normally EMA) generator. `prompt_template`: how a style
    word enters its prompts (a model trained on styled captions), None for a model without styles."""
    cfg = generator.config
    fields = {
        "architecture": ARCHITECTURE,
        "resolution": cfg.resolution,
        "text_encoder": {"name": cfg.text_encoder, "dim": cfg.text_dim},
        "generator": cfg.to_dict(),
        "trained": trained or {},
        **({"prompt_template": prompt_template} if prompt_template else {}),
    }
    return _write_folder(folder, generator, fields, card)


def _write_folder(folder: str | os.PathLike, module: torch.nn.Module, fields: dict, card: str | None) -> Path:
    """A checkpoint folder: model.safetensors, config.json (format, version, then `fields`), README.md if a
    card is given; each file replaced atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(folder / "model.safetensors", module.state_dict(), {"format": "pt"})
    atomic.write_json(folder / "config.json", {"format": FORMAT, "version": FORMAT_VERSION, **fields})
    if card is not None:
        atomic.write_text(folder / "README.md", card)
    return folder


def _read_weights(folder: Path, map_location: str) -> tuple[Path, dict]:
    """(path, tensors) of a folder's model.safetensors; CheckpointError when missing or unreadable."""
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing")
    try:
        return weights, load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: unreadable or truncated safetensors file ({exc})") from None


def read_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path}: missing (a ganvas checkpoint folder holds config.json and model.safetensors)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganvas checkpoint (expected \"format\": \"{FORMAT}\")")
    if data.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {data.get('version')!r}; this ganvas reads version {FORMAT_VERSION}"
        )
    return data


def load_generator(
    folder: str | os.PathLike, expected_text_encoder: str | None = None, map_location: str = "cpu"
) -> tuple[Generator, dict]:
    """Load the generator of a checkpoint folder. Raises CheckpointError naming the bad file."""
    folder = Path(folder)
    data = read_config(folder)
    cfg = _model_config(folder / "config.json", data)
    if expected_text_encoder and cfg.text_encoder != expected_text_encoder:
        raise CheckpointError(
            f"{folder}: made for text encoder {cfg.text_encoder!r}, but the configured "
            f"text encoder is {expected_text_encoder!r}"
        )
    weights, state = _read_weights(folder, map_location)
    state = Generator.upgrade_state_dict(state)  # pre-0.2 key names
    _check_fits(weights, _expected_shapes(folder / "config.json", cfg), state)
    _check_finite(weights, state)
    generator = Generator(cfg)  # only now: the file's tensors bound what this allocates
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit the config ({' '.join(str(exc).split())})") from None
    generator.eval().requires_grad_(False)
    return generator, data


def _model_config(path: Path, data: dict) -> ModelConfig:
    if "generator" not in data:
        raise CheckpointError(f"{path}: no \"generator\" section")
    try:
        return ModelConfig.from_dict(data["generator"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad generator config ({exc})") from None


def _expected_shapes(path: Path, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensor shapes the config implies, from a model built on the meta device: a crafted config
    (widths of 10^6) is caught by comparing shapes, not by allocating terabytes."""
    try:
        with torch.device("meta"):
            model = Generator(cfg)
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: the generator config makes no model ({' '.join(str(exc).split())})") from None
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _check_fits(weights: Path, expected: dict[str, tuple[int, ...]], state: dict) -> None:
    """One line naming the first tensor that is missing, extra or shaped differently from config.json."""
    missing = [key for key in expected if key not in state]
    extra = [key for key in state if key not in expected]
    wrong = [key for key in expected if key in state and tuple(state[key].shape) != expected[key]]
    if missing:
        problem = f"tensor {missing[0]!r} is missing from the file"
    elif extra:
        problem = f"tensor {extra[0]!r} is not part of this model"
    elif wrong:
        key = wrong[0]
        problem = f"tensor {key!r} is {list(state[key].shape)} in the file, config.json makes {list(expected[key])}"
    else:
        return
    count = len(missing) + len(extra) + len(wrong)
    more = f" (and {count - 1} more)" if count > 1 else ""
    raise CheckpointError(f"{weights}: weights do not fit config.json: {problem}{more}")


def _check_finite(weights: Path, state: dict) -> None:
    """NaN or inf weights would silently draw blank images; refuse them at load."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{weights}: tensor {key!r} holds NaN or infinite values (a diverged or "
                f"corrupted training run); this model would draw blank images"
            )


def file_hash(path: str | os.PathLike, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


# --- training state ---------------------------------------------------------------------------------------


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict) -> dict:
    state = opt.state_dict()
    meta = {"param_groups": state["param_groups"], "state": {}}
    for pid, pstate in state["state"].items():
        meta["state"][str(pid)] = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{key}"] = value
                meta["state"][str(pid)][key] = "tensor"
            else:
                meta["state"][str(pid)][key] = value
    return meta


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, meta: dict, tensors: dict):
    state = {}
    for pid, pstate in meta["state"].items():
        state[int(pid)] = {k: tensors[f"{prefix}.{pid}.{k}"] if v == "tensor" else v for k, v in pstate.items()}
    opt.load_state_dict({"param_groups": meta["param_groups"], "state": state})


def save_training_state(run_dir: Path, modules: dict, optimizers: dict, rng: dict, info: dict):
    """modules/optimizers: name -> object; rng: name -> uint8 state tensor; info: JSON-able counters."""
    tensors, meta = {}, {"info": info, "optimizers": {}, "rng": sorted(rng)}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}/{key}"] = value
    for name, opt in optimizers.items():
        meta["optimizers"][name] = _flatten_optimizer(f"opt:{name}", opt, tensors)
    for name, state in rng.items():
        tensors[f"rng:{name}"] = state
    save_safetensors(run_dir / "training_state.safetensors", tensors)
    atomic.write_json(run_dir / "training_state.json", meta)  # written last: its presence marks a complete save


def load_training_state(run_dir: Path, modules: dict, optimizers: dict) -> tuple[dict, dict]:
    meta_path, weights = run_dir / "training_state.json", run_dir / "training_state.safetensors"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tensors = load_file(str(weights))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise CheckpointError(f"{run_dir}: cannot resume, training state unreadable ({exc})") from None
    for name, module in modules.items():
        prefix = f"{name}/"
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in optimizers.items():
        _restore_optimizer(f"opt:{name}", opt, meta["optimizers"][name], tensors)
    rng = {name: tensors[f"rng:{name}"] for name in meta["rng"]}
    return meta["info"], rng


# --- upsampler folders (the network: core/model/upsampler.py) ---------------------------------------------


def save_upsampler(
    folder: str | os.PathLike, module: Upsampler, trained: dict | None = None, card: str | None = None
) -> Path:
    cfg = module.config
    fields = {
        "architecture": UPSAMPLER_ARCHITECTURE,
        "in_resolution": cfg.in_resolution,
        "out_resolution": cfg.out_resolution,
        "upsampler": cfg.to_dict(),
        "trained": trained or {},
    }
    return _write_folder(folder, module, fields, card)


def load_upsampler(folder: str | os.PathLike, map_location: str = "cpu") -> tuple[Upsampler, dict]:
    """Load an upsampler checkpoint folder; CheckpointError names the bad file and the problem."""
    folder = Path(folder)
    data = read_config(folder)
    path = folder / "config.json"
    if data.get("architecture") != UPSAMPLER_ARCHITECTURE or not is_upsampler_config(data):
        raise CheckpointError(
            f"{path}: not a ganvas upsampler (expected \"architecture\": \"{UPSAMPLER_ARCHITECTURE}\" "
            f"and an \"upsampler\" section; got {data.get('architecture')!r})"
        )
    try:
        cfg = UpsamplerConfig.from_dict(data["upsampler"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad upsampler config ({exc})") from None
    weights, state = _read_weights(folder, map_location)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Upsampler(cfg).state_dict().items()}
    _check_fits(weights, expected, state)
    _check_finite(weights, state)
    module = Upsampler(cfg)
    module.load_state_dict(state)
    module.eval().requires_grad_(False)
    return module, data
