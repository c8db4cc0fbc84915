"""YAML as configs are written: YAML 1.2 scalars, no duplicate keys (configs and protocol files)."""

from __future__ import annotations

import functools
import re
from typing import Any


class DuplicateKeyError(ValueError):
    """A mapping names one key twice (the line is in the message)."""


@functools.cache
def yaml12_loader() -> type:
    """A ``yaml.SafeLoader`` with YAML 1.2 scalars and no duplicate keys.

    PyYAML follows YAML 1.1, where an unquoted ``2:4`` is the base-60 integer 124, ``1e-4`` (no dot) is a
    string and ``yes``/``on`` are booleans. Here ints are decimal (or 0x/0o), floats are any decimal
    number with an optional exponent, booleans are ``true``/``false``; anything else stays a string.
    """
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        pass

    ConfigLoader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers
                if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                       list("tTfF"))
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                       list("-+0123456789"))
    ConfigLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in mapping:
                raise DuplicateKeyError(f"config key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1}); "
                                  "keep one")
            mapping[key] = loader.construct_object(value_node, deep=True)
        return mapping

    def construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
        text = str(loader.construct_scalar(node))
        return int(text, 0) if text.startswith(("0x", "0o")) else int(text, 10)

    ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    ConfigLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    return ConfigLoader


__all__ = ["DuplicateKeyError", "yaml12_loader"]
