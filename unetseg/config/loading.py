"""Reading, overriding, validating and dumping configs, with one readable error per problem."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from unetseg.config.base import ConfigError, did_you_mean
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


# A config is a few kB. Aliases let a tiny file stand for an exponentially large tree (the
# "billion laughs": nine lines, 10**9 values), which PyYAML builds cheaply as shared references
# but which validation, and the repr of an error, then walk in full: a MemoryError, or a
# `data check` spinning for minutes. Both are refused before construction.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Values in the document once every alias is expanded, counted on the node graph (each
    node once, with memoised subtree sizes); stops counting above ``limit``. A recursive
    alias (a node inside itself) counts as too large."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else (list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        )
        if done:
            visiting.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(child)] for child in children), limit + 1)
            continue
        if id(node) in visiting:
            return limit + 1
        visiting.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in visiting:
                return limit + 1
            stack.append((child, False))
    return sizes[id(root)]


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load``, refusing documents over :data:`MAX_YAML_BYTES` or whose aliases
    expand past :data:`MAX_YAML_VALUES` values, with one ConfigError naming ``source``."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters of YAML; a config is at most {MAX_YAML_BYTES:,}")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_VALUES) > MAX_YAML_VALUES:
            raise ConfigError(
                f"{source}: its aliases (*name) expand it to more than {MAX_YAML_VALUES:,} values, or into "
                "itself; refused (a YAML alias bomb?). Write the values out instead of nesting aliases"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``3``, ``true``, ``[a, b]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = parse_yaml(raw, f"--set {key.strip()}")
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key.strip()}: {raw!r} is not a valid YAML value ({err.problem})") from None
        set_dotted(tree, key.strip(), value)
    return tree


def read_yaml(path: Path, what: str = "config") -> Any:
    """The YAML document at ``path``; an unreadable, non-UTF-8 or malformed file is one
    ConfigError naming it."""
    try:
        return parse_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
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
        # an optional section (``evaluate: EvaluateSpec | None``): its schema is the class in the union
        annotation = next(
            (a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), annotation
        )
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


_SHORT = reprlib.Repr()  # a value, not a dump of it: a few items, two levels deep
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 6, 6, 60, 60

# YAML 1.1 reads these unquoted words as booleans, so `amp: off` arrives as False.
_YAML_BOOLEANS = {True: ("on", "yes", "true"), False: ("off", "no", "false")}


def _boolean_hint(problem: dict[str, Any], name: str) -> str:
    """For a boolean where a word was wanted: the word YAML turned into it, quoted."""
    value = problem["input"]
    if not isinstance(value, bool):
        return ""
    words = _YAML_BOOLEANS[value]
    expected = str(problem.get("ctx", {}).get("expected", ""))
    word = next((w for w in words if f"'{w}'" in expected), None)
    if word is None and problem["type"] != "string_type":  # no word of a choice that YAML turns into a boolean
        return ""
    quote = f"quote it, {name}: '{word}'" if word else "put the word in quotes"
    return f"; YAML reads an unquoted {'/'.join(words)} as {value}: {quote}"


def format_validation_error(
    err: ValidationError,
    source: str,
    tree: dict[str, Any],
    root: type[BaseModel] | None = None,
    what: str = "configuration",
) -> str:
    """One readable line per problem, each naming the dotted key."""
    root = root or Config
    arch = _arch_of(tree.get("model", {}))
    lines = []
    for problem in err.errors():
        loc = tuple(p for p in problem["loc"] if p not in ("unet", "smp_unet", "monai_basicunet", "monai_unet"))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if problem["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(
                str(loc[-1]), _known_keys(_section_model(problem["loc"], arch, root)), sep=", "
            )
        elif problem["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = problem["msg"].removeprefix("Value error, ")
            if "input" in problem and problem["type"] not in ("model_type",):
                msg += f" (got {_SHORT.repr(problem['input'])})" + _boolean_hint(problem, str(loc[-1]) if loc else key)
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
    return sorted(
        key for key in current.keys() | saved.keys() if key != "output_dir" and saved.get(key) != current.get(key)
    )


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
