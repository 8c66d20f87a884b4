"""The run configuration lives in :mod:`aswl.config`; these names are re-exported here."""

from aswl.config import (
    RESUMABLE_KEYS,
    Config,
    ConfigError,
    DataConfig,
    apply_override,
    config_diff,
    load_config,
    parse_override,
    read_yaml_mapping,
)

__all__ = ["RESUMABLE_KEYS", "Config", "ConfigError", "DataConfig", "apply_override",
           "config_diff", "load_config", "parse_override", "read_yaml_mapping"]
