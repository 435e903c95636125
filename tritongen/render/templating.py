"""The Jinja2 plumbing of the render stage: where the templates are, the environment with its
pbtxt string escaper, and parsing a rendered config.pbtxt back as Triton does."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritongen.errors import RenderError


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = pbtxt_string
    return env


def templates_dir() -> Path:
    """The source checkout's `templates/`, else the copy installed inside the wheel."""
    source = Path(__file__).resolve().parent.parent.parent / "templates"
    if (source / "member.pbtxt.j2").is_file():
        return source
    return Path(str(resources.files("tritongen.templates")))


def pbtxt_string(value: Any) -> str:
    """A protobuf text-format string literal: every quote, backslash and control escaped."""
    out = []
    for char in str(value):
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char.isascii():
            out.append(char)
        else:
            out.extend(f"\\{byte:03o}" for byte in char.encode())
    return '"' + "".join(out) + '"'


def copy_template(name: str, target: Path) -> None:
    """A file of `templates/` copied as is (a model.py and the modules it imports)."""
    shutil.copyfile(templates_dir() / name, target)
    target.chmod(0o644)


def parse_config(text: str, name: str) -> model_config_pb2.ModelConfig:
    """Parse a rendered config.pbtxt as Triton does; a failure is a bug in a template."""
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RenderError(f"rendered config.pbtxt of {name} does not parse: {exc}") from None
    if config.name != name:
        raise RenderError(f"rendered config.pbtxt of {name} names the model {config.name!r}")
    return config
