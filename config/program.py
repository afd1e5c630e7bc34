"""Load and validate the program rules file (``config/program.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from domain.errors import ConfigError
from domain.program import Program


def load_program(path: Path) -> Program:
    """Read ``path`` and validate it.

    Raises:
        ConfigError: the file is missing, is not YAML, or a field is wrong; the message
            gives the file, each wrong field's path (``rewards.1.percent``) and why.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the program rules: {exc.strerror}") from None
    try:
        raw: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    return parse_program(raw, str(path))


def parse_program(raw: Any, origin: str = "program rules") -> Program:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of settings")
    try:
        return Program.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: invalid program rules: " + _explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{path}: {message}{shown}")
    # One line: it becomes the failed run's state message and the alert's text.
    return "; ".join(lines)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint in one line, with where it is in the file."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return where + exc.problem
    return " ".join(str(exc).split())
