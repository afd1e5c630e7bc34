"""Local rendering of emails with Jinja2: the outbox backend's content, the fallback
content for SendGrid when no dynamic template id is configured, and the preview command.

Each template starts with a comment ``{# subject: ... #}`` holding its subject line,
itself a template, so subject and body live and change together.

Rendering 100,000 asks through Jinja costs more than everything else about sending
them, yet most of each email does not depend on the person. So a template is rendered
once per *shape* with a marker in place of each value it only prints, and each person's
email is that skeleton with their values put back: the same text Jinja would give (a
test compares the two for every template). A value the template does more with than
print (a filter, a test, a comparison, ``if value``) is part of the shape, so its
actual value is rendered by Jinja; a template using anything this module does not
understand is simply rendered by Jinja every time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound
from jinja2 import nodes as n

TEMPLATES = Path(__file__).with_name("templates")
_SUBJECT = re.compile(r"^\{#\s*subject:\s*(.*?)\s*#\}", re.S)
# The marker of a printed value while a skeleton is made: NUL never occurs in our
# templates, and a keyed value holding one is rendered by Jinja instead.
_MARK = "\x00"
_MARKED = re.compile("\x00([0-9]+)\x00")
# Shapes kept per process: a template has a handful (its keyed values' combinations).
# A template that makes more (a keyed value that differs per person) renders by Jinja.
MAX_SKELETONS = 512


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


@dataclass(frozen=True)
class _Compiled:
    """A template's subject and body, and how its values may be put into a skeleton.

    Attributes:
        subject: the subject line's template (``None``: the subject is the name).
        body: the body's template.
        keyed: names whose value shapes the text beyond being printed as is; their
            values are part of a skeleton's key. ``None``: no skeleton, Jinja each time.
    """

    subject: Template | None
    body: Template
    keyed: frozenset[str] | None


@dataclass(frozen=True)
class _Skeleton:
    """A rendered subject and body as ``%``-format strings, and the names filling them.

    ``%s`` turns a value into text exactly as Jinja prints it (``str``), and any ``%``
    of the template's own text is doubled, so ``subject % values`` is the subject.
    """

    subject: str | None
    subject_names: tuple[str, ...]
    body: str
    body_names: tuple[str, ...]


@lru_cache(maxsize=64)
def _compiled(template: str) -> _Compiled:
    """The subject and body templates of ``template``, compiled once per process."""
    env = _env()
    try:
        source, _, _ = env.loader.get_source(env, f"{template}.txt.j2")  # type: ignore[union-attr]
    except TemplateNotFound:
        raise KeyError(f"no email template {template!r}") from None
    match = _SUBJECT.match(source)
    subject = env.from_string(match.group(1)) if match else None
    keyed: frozenset[str] | None
    try:
        if _MARK in source:
            raise _Unsupported("NUL in the template")
        names = _keyed_names(env.parse(source), set())
        if match:
            names |= _keyed_names(env.parse(match.group(1)), set())
        keyed = frozenset(names)
    except _Unsupported:
        keyed = None
    return _Compiled(subject, env.get_template(f"{template}.txt.j2"), keyed)


class _Unsupported(Exception):
    """The template uses something the skeleton analysis does not vouch for."""


# Nodes whose meaning the analysis knows: anything else (calls, macros, includes,
# imports, loops, blocks called by hand...) makes the template render by Jinja.
_KNOWN = (
    n.Template,
    n.Output,
    n.TemplateData,
    n.Name,
    n.Const,
    n.Extends,
    n.Block,
    n.If,
    n.Test,
    n.Filter,
    n.Compare,
    n.Operand,
    n.And,
    n.Or,
    n.Not,
    n.CondExpr,
    n.Concat,
)


def _keyed_names(tree: n.Node, seen: set[str]) -> set[str]:
    """Names whose values do more than get printed verbatim, in ``tree`` and the
    templates it extends.

    Raises:
        _Unsupported: a node the analysis does not know, or a dynamic ``extends``.
    """
    keyed: set[str] = set()
    for node, printed in _walk(tree, printed=False):
        if not isinstance(node, _KNOWN):
            raise _Unsupported(type(node).__name__)
        if isinstance(node, n.Name) and not printed:
            keyed.add(node.name)
        if isinstance(node, n.Extends):
            if not isinstance(node.template, n.Const) or node.template.value in seen:
                raise _Unsupported("extends")
            parent = str(node.template.value)
            seen.add(parent)
            env = _env()
            source, _, _ = env.loader.get_source(env, parent)  # type: ignore[union-attr]
            if _MARK in source:
                raise _Unsupported("NUL in the template")
            keyed |= _keyed_names(env.parse(source), seen)
    return keyed


def _walk(node: n.Node, printed: bool) -> Iterator[tuple[n.Node, bool]]:
    """Every node under ``node`` (itself included), each with whether it is a name
    whose value only reaches the output verbatim (or only has its definedness asked)."""
    yield node, printed
    if isinstance(node, n.Output):
        for child in node.nodes:
            if isinstance(child, n.Name):
                yield from _walk(child, True)
            elif _is_plain_default(child):
                # ``name | default("...")``: the value itself when defined, else the
                # constant; definedness is part of the skeleton's key.
                assert isinstance(child, n.Filter)
                yield child, False
                assert child.node is not None
                yield from _walk(child.node, True)
                for arg in child.args:
                    yield from _walk(arg, False)
            else:
                yield from _walk(child, False)
        return
    if (
        isinstance(node, n.Test)
        and node.name in ("defined", "undefined")
        and isinstance(node.node, n.Name)
        and not node.args
        and not node.kwargs
    ):
        yield node.node, True
        return
    for inner in node.iter_child_nodes():
        yield from _walk(inner, False)


def _is_plain_default(node: n.Node) -> bool:
    return (
        isinstance(node, n.Filter)
        and node.name in ("default", "d")
        and isinstance(node.node, n.Name)
        and len(node.args) <= 1
        and all(isinstance(a, n.Const) for a in node.args)
        and not node.kwargs
        and node.dyn_args is None
        and node.dyn_kwargs is None
    )


_skeletons: dict[tuple[Any, ...], _Skeleton] = {}


def render(template: str, data: Mapping[str, str]) -> tuple[str, str]:
    """(subject, text body) of ``template`` filled with ``data``.

    Raises:
        KeyError: there is no such template.
        jinja2.UndefinedError: the template uses a value ``data`` does not give.
    """
    compiled = _compiled(template)
    skeleton = _skeleton_for(template, compiled, data)
    if skeleton is None:
        return _render_by_jinja(template, compiled, data)
    subject = (
        skeleton.subject % tuple([data[name] for name in skeleton.subject_names])
        if skeleton.subject is not None
        else template
    )
    body = skeleton.body % tuple([data[name] for name in skeleton.body_names])
    return subject, body.strip() + "\n"


def render_by_jinja(template: str, data: Mapping[str, str]) -> tuple[str, str]:
    """:func:`render` without skeletons: Jinja renders each email (the reference)."""
    return _render_by_jinja(template, _compiled(template), data)


def _render_by_jinja(
    template: str, compiled: _Compiled, data: Mapping[str, str]
) -> tuple[str, str]:
    return (
        compiled.subject.render(data) if compiled.subject is not None else template,
        compiled.body.render(data).strip() + "\n",
    )


def _skeleton_for(template: str, compiled: _Compiled, data: Mapping[str, str]) -> _Skeleton | None:
    keyed = compiled.keyed
    if keyed is None:
        return None
    try:
        # The names given (in their order) and the keyed values make the shape.
        key = (template, tuple(data), tuple([data[k] for k in keyed if k in data]))
        found = _skeletons.get(key)
    except TypeError:  # a keyed value that cannot be a key: Jinja renders it
        return None
    if found is not None:
        return found
    if len(_skeletons) >= MAX_SKELETONS or any(_MARK in str(data[k]) for k in keyed if k in data):
        return None
    printed = [k for k in data if k not in keyed]
    marked = {**data, **{name: f"{_MARK}{i}{_MARK}" for i, name in enumerate(printed)}}
    subject, subject_names = (
        _format(compiled.subject.render(marked), printed)
        if compiled.subject is not None
        else (None, ())
    )
    body, body_names = _format(compiled.body.render(marked), printed)
    skeleton = _Skeleton(subject, subject_names, body, body_names)
    _skeletons[key] = skeleton
    return skeleton


def _format(text: str, printed: list[str]) -> tuple[str, tuple[str, ...]]:
    """``text`` as a ``%``-format string, and the name whose value each ``%s`` takes."""
    parts = _MARKED.split(text)
    out = [parts[0].replace("%", "%%")]
    names: list[str] = []
    for i in range(1, len(parts), 2):
        names.append(printed[int(parts[i])])
        out.append("%s")
        out.append(parts[i + 1].replace("%", "%%"))
    return "".join(out), tuple(names)
