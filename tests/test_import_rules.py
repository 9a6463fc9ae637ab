"""The layers' import rules (docs/design.md §10), read from the source of every module.

- core imports only torch, einops and the standard library;
- ldm and forge import core only (and the host's own code inside functions), never each other;
- webui may import core, ldm and forge; gradio and modules.* only inside functions;
- scripts/ imports webui only (of this package), besides the webui's own modules;
- the package root (the public API) imports core, ldm and forge;
- nothing at run time imports devtools.
"""

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "hidiffusion_ext"
RUNTIME_LAYERS = ("core", "ldm", "forge", "webui")
THIRD_PARTY = {  # (layer) -> top-level packages allowed at module level
    "core": {"torch", "einops"},
    "ldm": {"torch", "einops"},
    "forge": {"torch", "einops"},
    "webui": {"torch", "einops", "fastapi"},
    "root": set(),
    "scripts": {"modules"},
}
OWN_LAYERS = {  # (layer) -> layers of this package it may import
    "core": {"core"},
    "ldm": {"core", "ldm"},
    "forge": {"core", "forge"},
    "webui": {"core", "ldm", "forge", "webui"},
    "root": {"core", "ldm", "forge"},
    "scripts": {"webui"},
}
HOST_INSIDE_FUNCTIONS = {"webui": {"gradio", "modules"}, "forge": {"backend"}}  # the host's code, at call time only


def layer_of(path: str) -> str:
    rel = os.path.relpath(path, ROOT).split(os.sep)
    if rel[0] == "scripts":
        return "scripts"
    return rel[1] if len(rel) > 2 else "root"


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def imports(source: str, name: str, is_package: bool):
    """(absolute module, inside a function) for every import statement."""
    tree = ast.parse(source)
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                # "from . import x": x may be a module of that package
                found.extend((f"{target}.{alias.name}" if not child.module else target, inside) for alias in child.names)
            visit(child, inside)

    visit(tree, False)
    return found


def violations(layer: str, source: str, name: str, is_package: bool = False):
    broken = []
    for target, inside in imports(source, name, is_package):
        top = target.split(".")[0]
        if top == PACKAGE:
            parts = target.split(".")
            own = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RUNTIME_LAYERS + ("devtools",)) else "root"
            if own == "devtools" and layer != "devtools":
                broken.append(f"{name}: imports {target} (nothing at run time imports devtools)")
            elif layer != "devtools" and own not in OWN_LAYERS[layer]:
                broken.append(f"{name}: imports {target} ({layer} may import {sorted(OWN_LAYERS[layer])} only)")
        elif layer == "devtools" or top in sys.stdlib_module_names or top == "__future__":
            continue
        elif top in HOST_INSIDE_FUNCTIONS.get(layer, ()):
            if not inside:
                broken.append(f"{name}: imports {target} at module level ({top} only inside functions)")
        elif top not in THIRD_PARTY[layer]:
            broken.append(f"{name}: imports {target} ({layer} may import {sorted(THIRD_PARTY[layer])} and the standard library)")
    return broken


def sources():
    for base in (PACKAGE, "scripts"):
        for folder, _, files in os.walk(os.path.join(ROOT, base)):
            for file in sorted(files):
                if file.endswith(".py"):
                    yield os.path.join(folder, file)


def test_every_module_keeps_its_layers_rules():
    broken, checked = [], 0
    for path in sources():
        with open(path, encoding="utf-8") as handle:
            broken += violations(layer_of(path), handle.read(), module_name(path), path.endswith("__init__.py"))
        checked += 1
    assert checked > 30
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("layer, source", [
    ("core", "from ..webui import fields"),
    ("core", "import gradio"),
    ("core", "from ..ldm import unet_patch"),
    ("ldm", "from ..forge import unet_patch"),
    ("forge", "from ..ldm.patch_ledger import PatchLedger"),
    ("forge", "import backend.attention"),
    ("webui", "import gradio as gr"),
    ("webui", "from modules import shared"),
    ("webui", "from ..devtools import models"),
    ("scripts", "from hidiffusion_ext.core import settings"),
    ("root", "from .webui import session"),
])
def test_the_checker_catches_each_kind_of_break(layer, source):
    name = {"scripts": "scripts.hidiffusion", "root": PACKAGE}.get(layer, f"{PACKAGE}.{layer}.example")
    assert violations(layer, source, name, is_package=layer == "root")


def test_imports_inside_functions_are_allowed_only_for_host_code():
    webui_ok = "def build():\n    import gradio as gr\n    from modules import shared\n"
    assert not violations("webui", webui_ok, f"{PACKAGE}.webui.ui")
    assert violations("core", "def f():\n    import gradio\n", f"{PACKAGE}.core.example")
