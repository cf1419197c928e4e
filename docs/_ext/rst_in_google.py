"""A griffe extension: the reStructuredText bits of gdjax's Google-style docstrings, as Markdown.

The docstrings are the single source of the API reference, and they keep a few
RST habits from optax (STYLE.md). This rewrites them while the site is built,
never in the modules:

- ``:func:`name``` (also ``:class:``, ``:data:``, ``:mod:``, ``:meth:``, ``:attr:``,
  ``:obj:``; ``~`` shows the last component only) becomes a cross-reference
  ``[`name`][gdjax.module.name]`` when the name resolves to a public gdjax
  object, else plain code;
- a ``.. math::`` block becomes a ``$$ … $$`` block for pymdownx.arithmatex;
- a paragraph ending in ``::`` (an RST literal block follows) ends in ``:``.

Loaded by mkdocstrings from ``mkdocs.yml`` (``extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|data|mod|meth|attr|obj|exc):`(~?)([\w.]+?)(?:\(\))?`")


def _public(path: str) -> bool:
    return not any(part.startswith("_") for part in path.split("."))


def _lookup(pkg: griffe.Module, path: str) -> str | None:
    """The canonical path of the public gdjax object ``path``, or None."""
    if not path.startswith(pkg.path + "."):
        return None
    try:
        obj = pkg[path[len(pkg.path) + 1 :]]
        if obj.is_alias:
            obj = obj.final_target
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return obj.path if _public(obj.path) else None


def _resolve(pkg: griffe.Module, obj: griffe.Object, name: str) -> str | None:
    scopes = [name]  # absolute
    parent = obj if obj.is_module or obj.is_class else obj.parent
    while parent is not None:  # relative: the class, then the module, then the package
        scopes.append(f"{parent.path}.{name}")
        parent = parent.parent
    for candidate in scopes:
        found = _lookup(pkg, candidate)
        if found is not None:
            return found
    return None


def _roles(text: str, pkg: griffe.Module, obj: griffe.Object) -> str:
    def replace(match: re.Match) -> str:
        tilde, name = match.groups()
        shown = name.rsplit(".", 1)[-1] if tilde else name
        target = _resolve(pkg, obj, name)
        return f"[`{shown}`][{target}]" if target else f"`{shown}`"

    return _ROLE.sub(replace, text)


def _blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if line.strip() == ".. math::":
            body: list[str] = []
            i += 1
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
            ):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            while body and not body[0].strip():
                body.pop(0)
            strip = min(len(b) - len(b.lstrip()) for b in body if b.strip()) if body else 0
            pad = " " * indent
            out += [f"{pad}$$", *(pad + b[strip:] for b in body), f"{pad}$$", ""]
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            line = line.rstrip()[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)


class RstInGoogle(griffe.Extension):
    """Rewrite every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._visit(pkg, pkg)

    def _visit(self, pkg: griffe.Module, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _roles(_blocks(obj.docstring.value), pkg, obj)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(pkg, member)
