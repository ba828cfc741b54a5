"""A plan: config values, each with the reason it was chosen, written as a commented YAML.

nnU-Net writes its plans as JSON a user cannot annotate; here every choice carries its reason
from the moment it is made (:meth:`Plan.set` takes both), and :meth:`Plan.render` puts each
reason above its key, so the written config explains itself and stays an ordinary config
(``unetseg train --config`` reads it; :meth:`Plan.config` validates it the same way).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

import yaml

from unetseg.config import Config, config_from_dict

WIDTH = 100


@dataclass
class Plan:
    header: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # dotted key -> value, in the order chosen
    reasons: dict[str, str] = field(default_factory=dict)  # dotted key (or section) -> why

    def set(self, key: str, value: Any, why: str) -> None:
        """Choose ``value`` for the dotted ``key`` because ``why``."""
        self.values[key] = value
        self.reasons[key] = why

    def note(self, section: str, why: str) -> None:
        """A reason that covers a whole section (written above its name)."""
        self.reasons[section] = why

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def tree(self) -> dict[str, Any]:
        tree: dict[str, Any] = {}
        for key, value in self.values.items():
            *sections, leaf = key.split(".")
            node = tree
            for section in sections:
                node = node.setdefault(section, {})
            node[leaf] = value
        return tree

    def config(self, source: str = "<plan>") -> Config:
        return config_from_dict(self.tree(), source)

    def render(self) -> str:
        lines = [f"# {line}" if line else "#" for line in self.header]
        lines += self._render(self.tree(), "", 0)
        return "\n".join(lines) + "\n"

    def _render(self, tree: dict[str, Any], prefix: str, indent: int) -> list[str]:
        lines: list[str] = []
        pad = " " * indent
        for key, value in tree.items():
            dotted = f"{prefix}{key}"
            section = isinstance(value, dict) and dotted not in self.values
            if section and indent == 0:
                lines.append("")  # a blank line before each top-level section
            why = self.reasons.get(dotted, "")
            lines += [f"{pad}# {line}" for line in textwrap.wrap(why, WIDTH - indent - 2, break_on_hyphens=False)]
            if section:
                lines.append(f"{pad}{key}:")
                lines += self._render(value, f"{dotted}.", indent + 2)
            else:
                lines.append(f"{pad}{key}: {flow(value)}")
        return lines


def flow(value: Any) -> str:
    """One value in YAML flow style (``{0: 1, 255: 0}``, ``[40, 400]``, ``data/x``, ``null``)."""
    text = yaml.safe_dump([value], default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text[1:-1]
