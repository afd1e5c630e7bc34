"""Local rendering of emails with Jinja2: the outbox backend's content, the fallback
content for SendGrid when no dynamic template id is configured, and the preview command.

Each template starts with a comment ``{# subject: ... #}`` holding its subject line,
itself a template, so subject and body live and change together.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound

TEMPLATES = Path(__file__).with_name("templates")
_SUBJECT = re.compile(r"^\{#\s*subject:\s*(.*?)\s*#\}", re.S)


@lru_cache(maxsize=1)
def _env() -> Environment:
    # Plain text email: autoescape would turn "&" in a company name into "&amp;".
    return Environment(  # noqa: S701
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def template_names() -> list[str]:
    return sorted(p.name.removesuffix(".txt.j2") for p in TEMPLATES.glob("[!_]*.txt.j2"))


@lru_cache(maxsize=64)
def _compiled(template: str) -> tuple[Template | None, Template]:
    """The subject and body templates of ``template``, compiled once per process."""
    env = _env()
    try:
        source, _, _ = env.loader.get_source(env, f"{template}.txt.j2")  # type: ignore[union-attr]
    except TemplateNotFound:
        raise KeyError(f"no email template {template!r}") from None
    match = _SUBJECT.match(source)
    subject = env.from_string(match.group(1)) if match else None
    return subject, env.get_template(f"{template}.txt.j2")


def render(template: str, data: Mapping[str, str]) -> tuple[str, str]:
    """(subject, text body) of ``template`` filled with ``data``.

    Raises:
        KeyError: there is no such template.
        jinja2.UndefinedError: the template uses a value ``data`` does not give.
    """
    subject, body = _compiled(template)
    return (
        subject.render(data) if subject is not None else template,
        body.render(data).strip() + "\n",
    )
