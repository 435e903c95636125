"""The render context: what every writer of one repository's models shares (where, from
which ensemble and plan, for which target), and the model folder each writer fills."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import jinja2

from tritongen.plan.plan import Plan
from tritongen.render.destination import inside
from tritongen.render.templating import copy_template, parse_config
from tritongen.spec.devices import Inventory
from tritongen.spec.members import Ensemble


class RenderTarget(str, Enum):
    """The Triton a repository is rendered for."""

    embedded = "embedded"  # members on the Python backend (the embedded server has no other)
    docker = "docker"  # members on Triton's native onnxruntime backend (NGC image)


@dataclass(frozen=True)
class RenderContext:
    root: Path  # the repository folder being written
    env: jinja2.Environment
    ensemble: Ensemble
    plan: Plan
    inventory: Inventory
    target: RenderTarget
    warmup: bool  # every model gets a model_warmup at its planned batch sizes

    def moved(self, root: Path, ensemble: Ensemble | None = None) -> RenderContext:
        """The same render into another folder (one node's), optionally of `ensemble` as
        that folder's server sees it."""
        return replace(self, root=root, ensemble=ensemble or self.ensemble)

    def render(self, template: str, **values: Any) -> str:
        return self.env.get_template(template).render(**values)

    def model_dir(self, name: str, config: str) -> Path:
        """Create `root/name/` with its config.pbtxt (checked) and return the version folder."""
        parse_config(config, name)
        model = inside(self.root, name)
        (model / "1").mkdir(parents=True, mode=0o755)
        (model / "config.pbtxt").write_text(config)
        return model / "1"

    def copy_templates(self, version: Path, files: dict[str, str]) -> None:
        """Files of `templates/` copied into a model's version folder (template -> name)."""
        for template, name in files.items():
            copy_template(template, version / name)
