"""The validated run configuration.

Every YAML file in ``configs/`` is parsed into :class:`Config`. The schema is strict: an
unknown key, a value of the wrong type or a value out of range is reported as one
:class:`ConfigError` naming the dotted key (``model.depht: unknown key, did you mean
'depth'?``), so a typo never silently falls back to a default. The same schema travels
inside every checkpoint, so a checkpoint alone rebuilds its model and its data pipeline.

Layout: ``base`` (error type, strict base model, option names), ``model`` (the ``model``
section), ``schema`` (the other sections and :class:`Config`), ``loading`` (YAML, ``--set``
overrides, error messages).
"""

from unetseg.config.base import (
    BLOCK_TYPES,
    RESIDUAL_BLOCKS,
    SKIP_MODES,
    ActType,
    BlockType,
    ConfigError,
    NormType,
    SkipMode,
    Strict,
)
from unetseg.config.loading import (
    apply_overrides,
    config_changes,
    config_from_dict,
    dump_config,
    format_validation_error,
    load_config,
    normalised_config,
    read_yaml,
    set_dotted,
)
from unetseg.config.model import ModelConfig, MonaiBasicUNetConfig, MonaiUNetConfig, SmpUnetConfig, UNetConfig
from unetseg.config.schema import (
    AffineConfig,
    AugmentConfig,
    BorderWeightConfig,
    Config,
    DataConfig,
    ElasticConfig,
    EvalConfig,
    InferenceConfig,
    LossConfig,
    PostprocessConfig,
    SplitConfig,
    TrainConfig,
)

__all__ = [
    "BLOCK_TYPES",
    "RESIDUAL_BLOCKS",
    "SKIP_MODES",
    "ActType",
    "AffineConfig",
    "AugmentConfig",
    "BlockType",
    "BorderWeightConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "ElasticConfig",
    "EvalConfig",
    "InferenceConfig",
    "LossConfig",
    "ModelConfig",
    "MonaiBasicUNetConfig",
    "MonaiUNetConfig",
    "NormType",
    "PostprocessConfig",
    "SkipMode",
    "SmpUnetConfig",
    "SplitConfig",
    "Strict",
    "TrainConfig",
    "UNetConfig",
    "apply_overrides",
    "config_changes",
    "config_from_dict",
    "dump_config",
    "format_validation_error",
    "load_config",
    "normalised_config",
    "read_yaml",
    "set_dotted",
]
