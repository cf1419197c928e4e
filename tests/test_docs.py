"""The documentation stays true: its code runs, its API reference is complete, its links resolve.

- Every ```python block of every page under ``docs/`` runs: a page's blocks in
  order, in one namespace, in a fresh working directory, with JAX in its
  default float32 (a page that needs float64 turns it on itself, as a user
  would). Output and shell sessions use other fences (```text, ```bash), and
  ```py marks code that needs what CI lacks (several hosts): those are not run.
- Every public module of gdjax has an API page ``docs/api/<module>.md`` holding
  ``::: gdjax.<module>``, listed in ``mkdocs.yml``'s nav; every public name of
  the module (its ``__all__``, else its public functions and classes) is
  rendered in the built site (when mkdocs is installed).
- ``gdjax.__version__`` is the version in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import pathlib
import pkgutil
import re
import subprocess
import sys
import tomllib

import jax
import pytest

import gdjax

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"
MKDOCS_YML = ROOT / "mkdocs.yml"

_PYTHON_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", flags=re.M | re.S)


def _pages() -> list[pathlib.Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)


def _blocks(page: pathlib.Path) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every ```python block of ``page``."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _PYTHON_BLOCK.finditer(text)]


PAGES_WITH_CODE = [p for p in _pages() if _blocks(p)]


def test_some_pages_have_code():
    assert len(PAGES_WITH_CODE) >= 10, PAGES_WITH_CODE


@pytest.fixture
def user_defaults(tmp_path, monkeypatch):
    """What a user has: float32 JAX, a non-interactive matplotlib, an empty directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    x64 = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", False)
    try:
        yield tmp_path
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
        jax.config.update("jax_enable_x64", x64)


@pytest.mark.parametrize(
    "page", PAGES_WITH_CODE, ids=[str(p.relative_to(DOCS)) for p in PAGES_WITH_CODE]
)
def test_page_code_runs(page, user_defaults):
    namespace: dict = {"__name__": "__docs__"}
    for line, code in _blocks(page):
        # Leading blank lines keep the traceback's line numbers those of the page.
        source = "\n" * (line - 1) + code
        exec(compile(source, str(page.relative_to(ROOT)), "exec"), namespace)


# ---------------------------------------------------------------- API reference


def _public_modules() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(gdjax.__path__) if not m.name.startswith("_")
    )


def _public_names(module_name: str) -> list[str]:
    module = importlib.import_module(f"gdjax.{module_name}")
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    )


def _nav_entries() -> set[str]:
    return set(re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?(\S+\.md)\s*$", MKDOCS_YML.read_text(), re.M))


@pytest.mark.parametrize("module_name", _public_modules())
def test_every_module_has_an_api_page_in_the_nav(module_name):
    page = API / f"{module_name}.md"
    how = (
        f"gdjax.{module_name} has no API page: create docs/api/{module_name}.md with the one "
        f"line '::: gdjax.{module_name}' and add '      - api/{module_name}.md' under "
        f"'API reference' in mkdocs.yml's nav."
    )
    assert page.is_file(), how
    directives = re.findall(r"^::: (\S+)", page.read_text(), re.M)
    assert f"gdjax.{module_name}" in directives, how
    # No "members:" option narrowing the page: every public name is rendered.
    assert "members:" not in page.read_text(), f"{page}: list no members; __all__ decides."
    assert f"api/{module_name}.md" in _nav_entries(), how


@pytest.mark.parametrize("module_name", _public_modules())
def test_all_names_exist(module_name):
    module = importlib.import_module(f"gdjax.{module_name}")
    missing = [n for n in _public_names(module_name) if not hasattr(module, n)]
    assert not missing, f"gdjax.{module_name}.__all__ names missing objects: {missing}"


def test_every_nav_page_exists():
    missing = [e for e in _nav_entries() if not (DOCS / e).is_file()]
    assert not missing


def test_api_index_lists_every_top_level_name():
    text = (API / "index.md").read_text()
    names = [
        n
        for n, obj in vars(gdjax).items()
        if not n.startswith("_") and not inspect.ismodule(obj) and n != "annotations"
    ]
    missing = [n for n in names if f"[`gdjax.{n}`]" not in text]
    assert not missing, f"docs/api/index.md does not link these top-level names: {missing}"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site


@pytest.mark.parametrize("module_name", _public_modules())
def test_built_api_page_renders_every_public_name(built_site, module_name):
    html = (built_site / "api" / module_name / "index.html").read_text()
    missing = [n for n in _public_names(module_name) if f'id="gdjax.{module_name}.{n}"' not in html]
    assert not missing, f"not rendered on api/{module_name}: {missing}"


# ---------------------------------------------------------------- links and version


def test_readme_relative_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    relative = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/") for t in relative)
    broken = [t for t in relative if not (ROOT / t).exists()]
    assert not broken, broken


def test_version_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert gdjax.__version__ == pyproject["project"]["version"]
    assert gdjax.__version__ == importlib.metadata.version("gdjax")
