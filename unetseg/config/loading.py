"""Reading, overriding, validating and dumping configs, with one readable error per problem."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from unetseg.config.base import ConfigError
from unetseg.config.model import MonaiBasicUNetConfig, MonaiUNetConfig, SmpUnetConfig, UNetConfig, _arch_of
from unetseg.config.schema import Config

# --------------------------------------------------------------------------- loading


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections on the way."""
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``3``, ``true``, ``[a, b]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key.strip()}: {raw!r} is not a valid YAML value ({err.problem})") from None
        set_dotted(tree, key.strip(), value)
    return tree


def read_yaml(path: Path, what: str = "config") -> Any:
    """The YAML document at ``path``; an unreadable, non-UTF-8 or malformed file is one
    ConfigError naming it."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a UTF-8 text file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None


def _known_keys(model: type[BaseModel] | None) -> list[str]:
    return list(model.model_fields) if model is not None else []


def _section_model(loc: tuple[Any, ...], arch: str, root: type[BaseModel]) -> type[BaseModel] | None:
    """The schema class that holds the key at ``loc``, for 'did you mean' hints."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None or not isinstance(part, str):
            return None
        if part in ("unet", "smp_unet", "monai_basicunet", "monai_unet"):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if part == "model":
            model = {"unet": UNetConfig, "smp_unet": SmpUnetConfig}.get(arch) or {
                "monai_basicunet": MonaiBasicUNetConfig,
                "monai_unet": MonaiUNetConfig,
            }.get(arch, UNetConfig)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def format_validation_error(
    err: ValidationError, source: str, tree: dict[str, Any], root: type[BaseModel] | None = None, what: str = "configuration"
) -> str:
    """One readable line per problem, each naming the dotted key."""
    root = root or Config
    arch = _arch_of(tree.get("model", {}))
    lines = []
    for problem in err.errors():
        loc = tuple(p for p in problem["loc"] if p not in ("unet", "smp_unet", "monai_basicunet", "monai_unet"))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if problem["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _known_keys(_section_model(problem["loc"], arch, root)), n=1)
            msg = "unknown key" + (f", did you mean {hint[0]!r}?" if hint else "")
        elif problem["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = problem["msg"].removeprefix("Value error, ")
            if "input" in problem and problem["type"] not in ("model_type",):
                msg += f" (got {problem['input']!r})"
        lines.append(f"{key}: {msg}")
    return f"invalid {what} in {source}:\n  " + "\n  ".join(lines)


def config_from_dict(tree: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, tree)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``--set`` overrides, validate."""
    path = Path(path)
    tree = read_yaml(path)
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    apply_overrides(tree, overrides or [])
    return config_from_dict(tree, str(path))


def dump_config(cfg: Config) -> dict[str, Any]:
    """A plain, YAML/JSON-safe dict that :func:`config_from_dict` reads back unchanged."""
    return cfg.model_dump(mode="json")


def normalised_config(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored run config read with today's schema, so keys added since (with their defaults)
    do not make an earlier run look different; a config today's schema rejects is returned as stored."""
    try:
        return dump_config(config_from_dict(stored)) if stored else None
    except ConfigError:
        return stored


def config_changes(stored: dict[str, Any] | None, cfg: Config) -> list[str]:
    """Dotted keys (``train.loss.lambda_dice``, ``seed``) where ``cfg`` differs from a run's
    stored config, read with today's schema. The output folder is left out: a run may have
    been moved."""
    saved, current = _dotted(normalised_config(stored) or {}), _dotted(dump_config(cfg))
    return sorted(key for key in current.keys() | saved.keys() if key != "output_dir" and saved.get(key) != current.get(key))


def _dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Sections and sub-sections flattened to dotted keys; a mapping whose keys are not names
    (``label_map``: pixel values) is a value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) and k.isidentifier() for k in value):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
