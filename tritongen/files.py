"""Reading the files one stage hands another (the spec, DEVICES.json, profile.json, plan.json).

They come from elsewhere and are untrusted: each is validated by a pydantic model, and every
problem is one `SpecError` line naming the file, the field and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tritongen.errors import SpecError

Model = TypeVar("Model", bound=BaseModel)


def read_json(path: Path, create_hint: str) -> Any:
    """The JSON document in `path`; `create_hint` says how to make a missing file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found; {create_hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read ({exc})") from None
    except RecursionError:
        raise SpecError(f"{path}: JSON nested too deeply") from None
    except ValueError as exc:
        raise SpecError(f"{path}: not valid JSON ({exc})") from None


def validate(model: type[Model], data: Any, path: Path) -> Model:
    """`data` as `model`, or one SpecError line naming the file and the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{path}: {describe(exc)}") from None


def load(model: type[Model], path: Path, create_hint: str) -> Model:
    return validate(model, read_json(path, create_hint), path)


def describe(exc: ValidationError) -> str:
    """The first validation error as `field: problem` on one line. A field that takes one of
    several forms (a shape, or name -> shape) fails once per form: the error that got deepest
    names the form the user meant; pydantic's form tags leave the path."""
    errors = exc.errors()
    error = max(errors, key=lambda e: (len(e["loc"]), -errors.index(e)))
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key; remove it or check its spelling"
    elif kind == "missing":
        message = "required field is missing"
    elif kind in ("model_type", "dict_type"):
        message = f"expected an object, got {type(error['input']).__name__}"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
    field = ".".join(str(part) for part in error["loc"] if not _is_form_tag(part))
    return f"{field}: {message}".replace("\n", " ") if field else message.replace("\n", " ")


def _is_form_tag(part: Any) -> bool:
    return isinstance(part, str) and "[" in part
