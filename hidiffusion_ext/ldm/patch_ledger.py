"""Reversible changes to nn.Modules, recorded so that undo restores each module exactly.

Only two kinds of change are made: an instance-level ``forward`` override (the class, and any
class-level forward the host installs later, stays in charge underneath) and forward hooks.
Every installed callable carries ``TAG`` so that a sweep can also remove patches whose ledger
was lost (e.g. the extension module was reloaded).
"""

from __future__ import annotations

from typing import Callable, List

from torch import nn

TAG = "_hidiffusion_patch"
_NO_INSTANCE_FORWARD = object()


def _tag(fn: Callable) -> Callable:
    setattr(fn, TAG, True)
    return fn


def is_tagged(fn) -> bool:
    return getattr(fn, TAG, False) is True


class PatchLedger:
    def __init__(self):
        self._undo: List[Callable[[], None]] = []

    def override_forward(self, module: nn.Module, make_forward: Callable[[Callable], Callable]) -> None:
        """Replace ``module.forward`` by ``make_forward(inner)``; ``inner`` calls what was there before."""
        prior = module.__dict__.get("forward", _NO_INSTANCE_FORWARD)
        if prior is _NO_INSTANCE_FORWARD:
            # Look the class forward up at call time: A1111 swaps attention forwards at class level.
            def inner(*args, **kwargs):
                return type(module).forward(module, *args, **kwargs)
        else:
            inner = prior
        wrapper = _tag(make_forward(inner))
        wrapper._hidiffusion_prior = prior
        module.forward = wrapper
        self._undo.append(lambda: restore_forward(module, wrapper))

    def hook(self, module: nn.Module, fn: Callable, pre: bool = False) -> None:
        def tagged(*args):  # a fresh function: bound methods cannot carry the tag
            return fn(*args)

        _tag(tagged)
        handle = module.register_forward_pre_hook(tagged) if pre else module.register_forward_hook(tagged)
        self._undo.append(handle.remove)

    def undo(self) -> None:
        """Undo everything, newest first; keeps going past a failing step and re-raises the first error."""
        first_error = None
        while self._undo:
            try:
                self._undo.pop()()
            except Exception as error:  # pragma: no cover - defensive: never leave half the patches behind
                first_error = first_error or error
        if first_error is not None:
            raise first_error


def restore_forward(module: nn.Module, wrapper) -> None:
    if module.__dict__.get("forward") is not wrapper:
        return  # someone else replaced it since; their wrapper owns the chain now
    prior = wrapper._hidiffusion_prior
    if prior is _NO_INSTANCE_FORWARD:
        del module.forward
    else:
        module.forward = prior


def sweep(root: nn.Module) -> int:
    """Remove every tagged forward override and hook under ``root``; returns how many were found."""
    found = 0
    for module in root.modules():
        forward = module.__dict__.get("forward")
        while forward is not None and is_tagged(forward):
            restore_forward(module, forward)
            found += 1
            forward = module.__dict__.get("forward")
        for hooks, extras in (
            (module._forward_hooks, ("_forward_hooks_with_kwargs", "_forward_hooks_always_called")),
            (module._forward_pre_hooks, ("_forward_pre_hooks_with_kwargs",)),
        ):
            for key in [k for k, fn in hooks.items() if is_tagged(fn)]:
                del hooks[key]
                for extra in extras:
                    getattr(module, extra, {}).pop(key, None)
                found += 1
    return found
