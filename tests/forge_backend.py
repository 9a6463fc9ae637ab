"""Forge's real ``backend`` imported from a checkout (FORGE_DIR), for the gated Forge tests.

Importing it needs three things this project does not install; they are stood in for, for the import only:
- psutil (a C extension): memory_management reads total/available RAM from it;
- sentencepiece (a C extension): Forge's vendored gguf imports it for tokenizer vocabularies;
- diffusers' Flux names (Forge pins diffusers 0.31, this project 0.27.2 for the parity tests): only Flux
  predictors in backend.modules.k_prediction use them.
Forge's ``backend`` is a namespace package (no __init__.py), and tests/webui_stubs has a regular ``backend`` package
that fake_webui puts on sys.path for the script tests: a regular package anywhere on sys.path wins over a namespace
one, so Forge's is registered by path. Whatever ``backend`` modules were loaded before are set aside while it is in
use and put back afterwards, with Forge's taken out.
"""

import contextlib
import os
import sys
import types
from types import SimpleNamespace


@contextlib.contextmanager
def _import_stubs():
    class RAM:
        total = available = 16 << 30

    saved = {name: sys.modules.get(name) for name in ("psutil", "sentencepiece")}
    for name, attrs in (("psutil", {"virtual_memory": RAM}), ("sentencepiece", {"SentencePieceProcessor": object})):
        if saved[name] is None:
            sys.modules[name] = types.SimpleNamespace(**attrs)
    import diffusers

    flux_stubbed = not hasattr(diffusers, "FlowMatchEulerDiscreteScheduler")
    if flux_stubbed:
        diffusers.FlowMatchEulerDiscreteScheduler = type("FlowMatchEulerDiscreteScheduler", (), {})
        sys.modules["diffusers.pipelines.flux"] = types.ModuleType("diffusers.pipelines.flux")
        sys.modules["diffusers.pipelines.flux.pipeline_flux"] = types.SimpleNamespace(calculate_shift=None)
    try:
        yield
    finally:  # the imported Forge modules keep their references; nothing else sees the stubs
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
        if flux_stubbed:
            del diffusers.FlowMatchEulerDiscreteScheduler
            sys.modules.pop("diffusers.pipelines.flux.pipeline_flux")
            sys.modules.pop("diffusers.pipelines.flux")


def _is_backend(name):
    return name == "backend" or name.startswith("backend.")


@contextlib.contextmanager
def forge_backend(forge_dir: str):
    """Forge's backend modules the gated tests use, imported from ``forge_dir``."""
    forge_path = os.path.realpath(os.path.join(forge_dir, "backend"))
    found = sys.modules.get("backend")
    loaded = found is not None and forge_path in [os.path.realpath(p) for p in getattr(found, "__path__", ())]
    saved = {} if loaded else {name: module for name, module in sys.modules.items() if _is_backend(name)}
    if not loaded:
        for name in saved:
            del sys.modules[name]
        package = types.ModuleType("backend", "Forge's backend package (a namespace package in the checkout).")
        package.__path__ = [forge_path]
        sys.modules["backend"] = package
    paths = [forge_dir, os.path.join(forge_dir, "packages_3rdparty")]  # Forge's launcher adds both
    sys.path[:0] = paths
    try:
        with _import_stubs():
            import backend.args

            backend.args.args.always_cpu = True  # read by memory_management at import: no CUDA here
            backend.args.args.cpu = True  # Forge Neo's name for it (backend/args.py, ComfyUI-style)
            import backend.attention
            from backend import memory_management
            from backend.misc.image_resize import adaptive_resize
            from backend.modules.k_model import KModel
            from backend.modules.k_prediction import Prediction
            from backend.nn.cnets import cldm, t2i_adapter
            from backend.nn.unet import Downsample, IntegratedUNet2DConditionModel
            from backend.operations import using_forge_operations
            from backend.patcher import controlnet
            from backend.patcher.unet import UnetPatcher
            from backend.sampling import sampling_function
            from backend.sampling.condition import ConditionCrossAttn
        yield SimpleNamespace(
            attention=backend.attention, memory_management=memory_management, KModel=KModel, Prediction=Prediction,
            Downsample=Downsample, IntegratedUNet2DConditionModel=IntegratedUNet2DConditionModel,
            using_forge_operations=using_forge_operations, UnetPatcher=UnetPatcher, ConditionCrossAttn=ConditionCrossAttn,
            calc_cond_uncond_batch=sampling_function.calc_cond_uncond_batch, sampling=sampling_function, cldm=cldm,
            t2i_adapter=t2i_adapter, controlnet=controlnet, adaptive_resize=adaptive_resize)
    finally:
        for path in paths:
            sys.path.remove(path)
        if not loaded:
            for name in [n for n in sys.modules if _is_backend(n)]:
                del sys.modules[name]
            sys.modules.update(saved)
