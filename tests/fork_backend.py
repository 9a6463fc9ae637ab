"""A Forge fork's real U-Net, patcher, ControlNet and sampling code, imported from a checkout, behind one small API.

The gated fork tests (test_classic_real, test_reforge_real, test_neo_real) run the same cases on each fork; this module
hides the two layouts, recognised by what the checkout has (not by its name):
- ``ldm_patched`` (Forge Classic, reForge main): ldm_patched's UNetModel inside its BaseModel, modules_forge's
  UnetPatcher, ldm_patched's cldm ControlNet in its ControlNet object, added by modules_forge.controlnet's
  apply_controlnet_advanced, and modules_forge.forge_sampler (sampling_prepare, forge_sample, sampling_cleanup),
  which is what the forks' CFG denoiser runs per step (conditioning modifiers, then ldm_patched's sampling_function);
- ``backend`` (Forge Neo, reForge's newmain_newforge): Forge main's layout, imported by tests/forge_backend.py and
  driven as tests/test_forge_real.py and tests/test_forge_controlnet_real.py drive Forge main.

Stand-ins, for the import only: packages the checkout imports at module level but this project does not install
(tests/absent_packages.py), and three webui modules the ldm_patched tree imports (``_webui_modules``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from types import SimpleNamespace

import torch
from absent_packages import stand_ins

CPU = torch.device("cpu")
ABSENT = ("psutil", "torchsde", "torchdiffeq", "scipy", "torchvision", "transformers", "rich", "sentencepiece",
          "spandrel", "kornia", "safetensors", "accelerate", "huggingface_hub", "tokenizers", "cv2", "numba", "lark",
          "k_diffusion", "trampoline", "av", "pywt", "blendmodes", "einops_exts")
FORK_PACKAGES = ("ldm_patched", "modules_forge", "modules", "backend", "k_diff", "gguf")


def layout(fork_dir: str) -> str:
    """'backend' (Forge main's tree), 'ldm_patched' (the older one) or '' (neither)."""
    if os.path.isfile(os.path.join(fork_dir, "backend", "nn", "unet.py")):
        return "backend"
    if os.path.isfile(os.path.join(fork_dir, "ldm_patched", "ldm", "modules", "diffusionmodules", "openaimodel.py")):
        return "ldm_patched"
    return ""


def _is_fork_module(name: str) -> bool:
    return name.split(".")[0] in FORK_PACKAGES


def _webui_modules() -> dict:
    """What the ldm_patched tree imports from the webui's ``modules`` at module level, and nothing else:
    - modules.shared.opts: Classic ldm_patched/modules/model_base.py:23, reForge supported_models.py:23, samplers.py:18
      (read with getattr defaults on the sampling path: samplers.py:401);
    - modules.safe: Classic ldm_patched/modules/utils.py:15 (used only when loading checkpoint files);
    - modules.sd_samplers_kdiffusion_smea.Rescaler: reForge ldm_patched/k_diffusion/sampling.py:28 (SMEA samplers);
    - modules.devices.device: Neo backend/stream.py:4 (CUDA streams, off on CPU); Neo's backend/sampling/condition.py:5
      imports modules.shared without using it."""
    package = types.ModuleType("modules")
    package.__path__ = []
    shared = types.ModuleType("modules.shared")
    shared.opts = SimpleNamespace()
    shared.sd_model = None
    safe = types.ModuleType("modules.safe")
    smea = types.ModuleType("modules.sd_samplers_kdiffusion_smea")
    smea.Rescaler = type("Rescaler", (), {})
    devices = types.ModuleType("modules.devices")
    devices.device = CPU
    package.shared, package.safe, package.sd_samplers_kdiffusion_smea, package.devices = shared, safe, smea, devices
    return {"modules": package, "modules.shared": shared, "modules.safe": safe,
            "modules.sd_samplers_kdiffusion_smea": smea, "modules.devices": devices}


def gated_fork(env_var: str):
    """(pytestmark, module-scoped ``host`` fixture) for a test module on the fork checkout named by ``env_var``."""
    import pytest

    fork_dir = os.environ.get(env_var, "")
    mark = pytest.mark.skipif(not layout(fork_dir), reason=f"set {env_var} to a checkout of the fork")

    @pytest.fixture(scope="module")
    def host():
        with fork_host(fork_dir) as fork:
            yield fork

    return mark, host


@contextlib.contextmanager
def fork_host(fork_dir: str):
    """The fork at ``fork_dir`` as a host object (see LdmPatchedHost / BackendHost); its modules are unloaded after."""
    kind = layout(fork_dir)
    if kind not in ("backend", "ldm_patched"):
        raise ValueError(f"{fork_dir} has neither backend/ nor ldm_patched/")
    saved = {name: module for name, module in sys.modules.items() if _is_fork_module(name)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(_webui_modules())
    try:
        with (_backend_host if kind == "backend" else _ldm_patched_host)(fork_dir) as host:
            yield host
    finally:
        for name in [n for n in sys.modules if _is_fork_module(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


@contextlib.contextmanager
def _backend_host(fork_dir: str):
    from forge_backend import forge_backend

    packages = os.path.join(fork_dir, "modules_forge", "packages")  # Neo's vendored gguf, imported top-level
    sys.path.insert(0, packages)
    try:
        with stand_ins(ABSENT), forge_backend(fork_dir) as backend:
            yield BackendHost(backend, fork_dir)
    finally:
        sys.path.remove(packages)


@contextlib.contextmanager
def _ldm_patched_host(fork_dir: str):
    argv, sys.argv = sys.argv, sys.argv[:1]  # Classic's args_parser parses the command line at import
    sys.path.insert(0, fork_dir)
    try:
        with stand_ins(ABSENT):
            host = LdmPatchedHost(fork_dir)
        sys.argv = argv
        yield host
    finally:
        sys.argv = argv
        sys.path.remove(fork_dir)


class LdmPatchedHost:
    """Forge Classic / reForge main: ldm_patched's model classes, modules_forge's patcher and sampler."""

    layout = "ldm_patched"

    def __init__(self, fork_dir: str):
        import importlib

        args_parser = importlib.import_module("ldm_patched.modules.args_parser")
        args_parser.args.always_cpu = True  # read by model_management at import: no CUDA here
        self.model_management = importlib.import_module("ldm_patched.modules.model_management")
        self.openaimodel = importlib.import_module("ldm_patched.ldm.modules.diffusionmodules.openaimodel")
        self.attention = importlib.import_module("ldm_patched.ldm.modules.attention")
        self.model_base = importlib.import_module("ldm_patched.modules.model_base")
        self.models_base = importlib.import_module("ldm_patched.modules.supported_models_base")
        self.ops = importlib.import_module("ldm_patched.modules.ops")
        self.cldm = importlib.import_module("ldm_patched.controlnet.cldm")
        self.controlnet = importlib.import_module("ldm_patched.modules.controlnet")
        self.UnetPatcher = importlib.import_module("modules_forge.unet_patcher").UnetPatcher
        self.forge_sampler = importlib.import_module("modules_forge.forge_sampler")
        self.apply_controlnet_advanced = importlib.import_module("modules_forge.controlnet").apply_controlnet_advanced
        self.Downsample = self.openaimodel.Downsample

    # -- building ---------------------------------------------------------------------------------------
    def unet_config(self, params: dict) -> dict:
        """ldm_patched UNetModel keyword arguments for an ldm UNetModel's params (per-block transformer depths)."""
        attention = [2**level in params["attention_resolutions"] for level in range(len(params["channel_mult"]))]
        depth, blocks = params["transformer_depth"], params["num_res_blocks"]
        return dict(
            image_size=32, in_channels=params["in_channels"], model_channels=params["model_channels"],
            out_channels=params["out_channels"], num_res_blocks=blocks, dropout=0,
            channel_mult=tuple(params["channel_mult"]), num_heads=params.get("num_heads", -1),
            num_head_channels=params.get("num_head_channels", -1), use_spatial_transformer=True,
            transformer_depth=[depth if a else 0 for a in attention for _ in range(blocks)],
            transformer_depth_output=[depth if a else 0 for a in attention for _ in range(blocks + 1)],
            transformer_depth_middle=depth, context_dim=params["context_dim"],
            use_linear_in_transformer=params["use_linear_in_transformer"], adm_in_channels=None,
            use_temporal_attention=False, use_temporal_resblock=False, dtype=torch.float32,
        )

    def build_patcher(self, params: dict, state_dict=None, **unet_extra):
        """BaseModel (SD1-style eps prediction) around a UNetModel built by the fork with its own operations;
        ``unet_extra``: more UNetModel keywords, as a supported model's unet_extra_config adds them (reForge's SD20:
        attn_precision)."""
        unet_config = {**self.unet_config(params), **unet_extra}
        config = self.models_base.BASE(dict(unet_config))
        config.unet_config = dict(unet_config)  # BASE merges its class defaults into the copy it keeps
        if hasattr(config, "set_inference_dtype"):
            config.set_inference_dtype(torch.float32, None)
        model = self.model_base.BaseModel(config, device=CPU)
        if state_dict is None:
            torch.manual_seed(2)
            state_dict = self.openaimodel.UNetModel(**unet_config).state_dict()
        model.diffusion_model.load_state_dict(state_dict, strict=True)  # ldm_patched's key layout is ldm's
        model.requires_grad_(False).eval()
        return self.UnetPatcher(model, load_device=CPU, offload_device=CPU)

    def build_controlnet(self, params: dict, seed: int):
        """ldm_patched's ControlNet object around its cldm ControlNet shaped like the U-Net, random weights (the zero
        layers re-randomised so every path shows), built as load_controlnet does for an ldm state dict."""
        config = self.unet_config(params)
        config.pop("out_channels")
        for key in ("adm_in_channels", "use_temporal_attention", "use_temporal_resblock"):
            config.pop(key)
        config.update(hint_channels=3, operations=self.ops.disable_weight_init, device=CPU)
        control_model = self.cldm.ControlNet(**config)
        _randomise(control_model, seed)
        control_model.requires_grad_(False).eval()
        return self.controlnet.ControlNet(control_model, global_average_pooling=False, load_device=CPU,
                                          manual_cast_dtype=None)

    def with_control(self, patcher, controlnet, hint, strength=1.0):
        """modules_forge.controlnet.apply_controlnet_advanced, as the built-in ControlNet's process_before_every_sampling
        calls it: a clone of ``patcher`` carrying a copy of ``controlnet`` with the hint."""
        return self.apply_controlnet_advanced(unet=patcher, controlnet=controlnet, image_bchw=hint, strength=strength,
                                              start_percent=0.0, end_percent=1.0)

    # -- sampling ---------------------------------------------------------------------------------------
    def denoise(self, patcher, x, context, sigma, seed=1234):
        """One sampler step's denoiser call (CFG 7, cond and uncond) on the fork's own path: forge_sampler's
        sampling_prepare (loads the models: object patches applied), forge_sample (conditioning modifiers, then
        ldm_patched's sampling_function: calc_cond_uncond_batch, get_control, apply_model), sampling_cleanup."""
        fs = self.forge_sampler
        fs.sampling_prepare(patcher, x)
        model = SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher))
        denoiser = SimpleNamespace(inner_model=SimpleNamespace(inner_model=model), p=SimpleNamespace(seeds=[seed]))
        params = SimpleNamespace(x=x, sigma=sigma, text_cond=context[:1], text_uncond=context[1:], image_cond=None)
        try:
            with torch.no_grad():
                return fs.forge_sample(denoiser, params, 7.0, [[(0, 1.0)]])
        finally:
            fs.sampling_cleanup(patcher)

    def unload(self, patcher):
        """Unload every clone of ``patcher``'s model: object patches are restored (ModelPatcher.unpatch_model)."""
        if hasattr(self.model_management, "unload_model_clones"):  # Classic; reForge main has no such function
            self.model_management.unload_model_clones(patcher)
        for loaded in list(getattr(self.model_management, "current_loaded_models", [])):
            if loaded.model.model is patcher.model:
                loaded.model_unload()
                self.model_management.current_loaded_models.remove(loaded)

    def predictor(self, patcher):
        return patcher.model.model_sampling


class BackendHost:
    """Forge Neo / reForge newmain_newforge: Forge main's backend, driven as the Forge main gated tests drive it."""

    layout = "backend"

    def __init__(self, backend, fork_dir: str):
        import test_forge_controlnet_real as forge_cn
        import test_forge_real as forge_real

        self.backend, self._real, self._cn = backend, forge_real, forge_cn
        self.UnetPatcher, self.Downsample = backend.UnetPatcher, backend.Downsample
        self.attention = backend.attention
        self.model_management = backend.memory_management

    def build_patcher(self, params: dict, state_dict=None):
        patcher = self._real._forge_patcher(self.backend, params, state_dict)
        if getattr(patcher.model, "config", False) is None:
            # Neo's KModel sizes its memory from the huggingface_guess model config (k_model.py memory_required);
            # 1.0 is the base config's memory_usage_factor (SD1.5's).
            patcher.model.config = SimpleNamespace(memory_usage_factor=1.0)
        return patcher

    def build_controlnet(self, params: dict, seed: int):
        return self._cn.build_controlnet(self.backend, seed)

    def with_control(self, patcher, controlnet, hint, strength=1.0):
        return self._cn.with_control(self.backend, patcher, controlnet, hint, strength)

    def denoise(self, patcher, x, context, sigma, seed=1234):
        fc = self.backend
        fc.sampling.sampling_prepare(patcher, x)
        model = SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher))
        denoiser = SimpleNamespace(inner_model=SimpleNamespace(inner_model=model), p=SimpleNamespace(seeds=[seed]))
        params = SimpleNamespace(x=x, sigma=sigma, text_cond=context[:1], text_uncond=context[1:], image_cond=None)
        try:
            with torch.no_grad():
                denoised, _, _ = fc.sampling.sampling_function(denoiser, params, 7.0, [[(0, 1.0)]])
        finally:
            fc.sampling.sampling_cleanup(patcher)
        return denoised

    def unload(self, patcher):
        self.model_management.unload_model_clones(patcher)

    def predictor(self, patcher):
        return patcher.model.predictor


def _randomise(module, seed: int) -> None:
    """Seeded random weights for a module built under ldm_patched's operations (which skip initialisation),
    non-zero everywhere, so the zero convs pass every path through."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 1.0 if name.endswith("norm.weight") or ".norm" in name and name.endswith("weight") else 0.05
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if scale == 1.0 else 0.0))
