"""Import-time stand-ins for third-party packages a fork's code imports at module level but the gated tests never run.

The forks' ``ldm_patched``/``backend`` trees import samplers (torchsde, scipy), CLIP tokenizers (transformers),
video models (torchvision), a console logger (rich) and a RAM probe (psutil) when their U-Net, patcher and sampling
modules load. None of those code paths runs in the gated tests (they build a U-Net and call the denoiser), so a
package that is not installed is stood in for by a module whose every attribute is an inert placeholder class and
whose submodules are created on import. A package that IS installed is always used as it is.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import types


class _Placeholder:
    """Any name from a stood-in package: subclassable, callable, and inert."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Placeholder()

    def __getattr__(self, name):
        return _Placeholder()


class _NullHandler(logging.NullHandler):
    def __init__(self, *args, **kwargs):
        super().__init__()


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "virtual_memory":  # psutil: memory_management sizes its RAM budget from it
            return lambda: types.SimpleNamespace(total=16 << 30, available=16 << 30)
        if name.endswith("Handler"):  # rich.logging.RichHandler: Neo's backend/logging.py attaches one to its logger
            value = type(name, (_NullHandler,), {"__module__": self.__name__})
        else:
            value = type(name, (_Placeholder,), {"__module__": self.__name__})
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = set(roots)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def missing(names):
    return [name for name in names if name not in sys.modules and importlib.util.find_spec(name) is None]


@contextlib.contextmanager
def stand_ins(names):
    """Stand in for those of ``names`` that are not installed, while the block runs; returns their names."""
    roots = missing(names)
    finder = _Finder(roots)
    sys.meta_path.append(finder)
    try:
        yield roots
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] in roots]:
            del sys.modules[name]  # the fork modules imported meanwhile keep their references
