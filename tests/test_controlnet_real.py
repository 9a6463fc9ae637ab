"""sd-webui-controlnet's REAL ControlNet and U-Net hook under HiDiffusion on A1111 (needs CONTROLNET_DIR).

Runs the extension's own code from a checkout of v1.1.455 (commit 67271170), on CPU with random weights:
- scripts/cldm.py: PlugableControlModel and ControlNet (its encoder, zero convs and hint block, forward 352-400);
- scripts/adapter.py: PlugableAdapter and Adapter (a T2I-Adapter);
- scripts/hook.py: ControlParams, UnetHook.hook (which replaces the U-Net instance's forward, 990-992), the forward it
  installs (forward_webui 897-908 and forward 472-889: the per-unit loop, the ldm encoder, ``aligned_adding`` 245-265
  at the middle block and on every skip, which resizes any mismatch with nearest) and UnetHook.restore (1067).
The U-Net is hidiffusion_ext.devtools.models' random ldm UNetModel; the ControlNet is built from its params.

Run with CONTROLNET_DIR=/path/to/sd-webui-controlnet; skipped otherwise. The checkout's ``scripts`` folder is
registered as the ``scripts`` package by path (this repository's own scripts/ folder would otherwise be found first
on sys.path). What the extension imports and this project does not install is stood in for, in sys.modules only
while scripts.cldm, scripts.adapter and scripts.hook are imported, then the previous entries are put back:
- the webui's own ``modules.devices``, ``shared``, ``lowvram``, ``scripts`` (with ``script_callbacks``),
  ``prompt_parser`` and ``processing`` (A1111 1.10.1), reduced to what the two files read on this code path;
- ``transformers.models.clip.modeling_clip.CLIPVisionModelOutput``: scripts/ipadapter/ipadapter_model.py names it in
  annotations only;
- ``ldm.models.diffusion.ddpm``: hook.py takes ``extract_into_tensor`` from it; the real module imports
  pytorch_lightning, torchvision and omegaconf for training code, and only re-exports the function from
  ldm.modules.diffusionmodules.util, which the stand-in hands over unchanged.

The SDXL-shaped U-Net gets a ``label_emb`` (SDXL's "sequential" vector embedding) because hook.py's SDXL path adds
``label_emb(y)`` itself; the ldm package here cannot build one, its UNetModel never runs its own forward under the hook.
"""

import collections
import contextlib
import importlib
import os
import sys
import types
from types import SimpleNamespace

import controlnet_support as cn
import pytest
import torch
from torch import nn

from hidiffusion_ext import apply_hidiffusion
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params
from hidiffusion_ext.ldm.control_patch import CONTROLNET, T2I_ADAPTER

CONTROLNET_DIR = os.environ.get("CONTROLNET_DIR", "")
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(CONTROLNET_DIR, "scripts", "hook.py")),
                                reason="set CONTROLNET_DIR to an sd-webui-controlnet checkout")

STEPS, SIZES, PHASES = cn.STEPS, cn.SIZES, cn.PHASES
ADM = 16  # width of the SDXL-shaped nets' vector input y


# -- the webui's modules, as far as scripts/cldm.py and scripts/hook.py use them ----------------------------------------
def _module(name, doc, **attrs):
    module = types.ModuleType(name, doc)
    module.__dict__.update(attrs)
    return module


def _package(name, doc, path=()):
    package = _module(name, doc)
    package.__path__ = list(path)
    return package


def _webui_stand_ins():
    """The sys.modules entries the extension's import needs, by name."""
    cfg_denoiser_callbacks = []

    def on_cfg_denoiser(callback, *, name=None):
        cfg_denoiser_callbacks.append(callback)

    def remove_callbacks_for_function(callback_func):
        while callback_func in cfg_denoiser_callbacks:
            cfg_denoiser_callbacks.remove(callback_func)

    script_callbacks = _module(
        "modules.script_callbacks", "modules/script_callbacks.py: the cfg-denoiser callback list UnetHook (un)registers.",
        on_cfg_denoiser=on_cfg_denoiser, remove_callbacks_for_function=remove_callbacks_for_function,
        cfg_denoiser_callbacks=cfg_denoiser_callbacks)

    class ComposableScheduledPromptConditioning:
        """modules/prompt_parser.py: one prompt's schedules and weight."""

        def __init__(self, schedules, weight=1.0):
            self.schedules, self.weight = schedules, weight

    class MulticondLearnedConditioning:
        """modules/prompt_parser.py: a batch of composable prompts."""

        def __init__(self, shape, batch):
            self.shape, self.batch = shape, batch

    class StableDiffusionProcessing:
        """modules/processing.py: unmark_prompt_context resets the class-level conditioning caches."""

        cached_c = [None, None]
        cached_uc = [None, None]

    cpu = torch.device("cpu")
    entries = [
        _package("modules", "A1111's modules package (1.10.1), reduced to what sd-webui-controlnet's hook path reads."),
        _module("modules.devices", "modules/devices.py: the CPU, fp32, no U-Net upcast.", device=cpu, cpu=cpu,
                dtype=torch.float32, dtype_unet=torch.float32, dtype_vae=torch.float32, unet_needs_upcast=False,
                get_device_for=lambda task: cpu, cond_cast_unet=lambda input: input,
                autocast=lambda disable=False: contextlib.nullcontext()),
        _module("modules.shared", "modules/shared.py: command-line options as parsed without flags.",
                cmd_opts=SimpleNamespace(lowvram=False, medvram=False, medvram_sdxl=False)),
        _module("modules.lowvram", "modules/lowvram.py: only reached with --lowvram.", send_everything_to_cpu=lambda: None),
        script_callbacks,
        _module("modules.scripts", "modules/scripts.py: hook.py reaches script_callbacks through it.",
                script_callbacks=script_callbacks),
        _module("modules.prompt_parser", "modules/prompt_parser.py: the conditioning types hook.py marks.",
                ScheduledPromptConditioning=collections.namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"]),
                ComposableScheduledPromptConditioning=ComposableScheduledPromptConditioning,
                MulticondLearnedConditioning=MulticondLearnedConditioning),
        _module("modules.processing", "modules/processing.py", StableDiffusionProcessing=StableDiffusionProcessing),
        _package("transformers", "transformers (not installed here): only a type name is imported."),
        _package("transformers.models", "transformers.models"),
        _package("transformers.models.clip", "transformers.models.clip"),
        _module("transformers.models.clip.modeling_clip", "Only CLIPVisionModelOutput, an annotation in ipadapter_model.py.",
                CLIPVisionModelOutput=type("CLIPVisionModelOutput", (), {})),
    ]
    from ldm.modules.diffusionmodules.util import extract_into_tensor

    entries.append(_module("ldm.models.diffusion.ddpm", "ldm's ddpm.py re-exports extract_into_tensor from util.py.",
                           extract_into_tensor=extract_into_tensor))
    entries.append(_package("scripts", "sd-webui-controlnet's scripts folder (it has no __init__.py).",
                            [os.path.join(CONTROLNET_DIR, "scripts")]))
    return {m.__name__: m for m in entries}, cfg_denoiser_callbacks


@contextlib.contextmanager
def _imported_with_stand_ins(stand_ins):
    """Stand-ins in sys.modules for the import only; the entries they cover are put back as they were afterwards."""
    def covered(name):
        return name.split(".")[0] in ("modules", "transformers", "scripts") or name == "ldm.models.diffusion.ddpm"

    saved = {name: module for name, module in sys.modules.items() if covered(name)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name in [n for n in sys.modules if covered(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def ext():
    """scripts.cldm and scripts.hook of the checkout (hook.py prints a notice that sgm is missing: ldm is used)."""
    stand_ins, callbacks = _webui_stand_ins()
    with _imported_with_stand_ins(stand_ins):
        cldm = importlib.import_module("scripts.cldm")
        adapter = importlib.import_module("scripts.adapter")
        hook = importlib.import_module("scripts.hook")
    assert cldm.using_sgm is False and hook.UNetModel is importlib.import_module(
        "ldm.modules.diffusionmodules.openaimodel").UNetModel
    return SimpleNamespace(cldm=cldm, adapter=adapter, hook=hook, callbacks=callbacks)


# -- models -----------------------------------------------------------------------------------------------------------
def _randomize_zero_layers(model: nn.Module) -> None:
    """Zero-initialised layers (zero convs, the hint block's last conv, ResBlock/transformer outputs) get random weights."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.numel() and not weight.any() and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def build_unet(shape, in_channels=4):
    unet = build_ldm_unet(unet_params(shape, in_channels=in_channels), seed=1)
    if shape == "sdxl":  # sgm's UNetModel with adm_in_channels: label_emb.0.{0,2}
        torch.manual_seed(4)
        dim = 4 * unet.model_channels
        unet.label_emb = nn.Sequential(nn.Sequential(nn.Linear(ADM, dim), nn.SiLU(), nn.Linear(dim, dim)))
        unet.requires_grad_(False)
    return unet


@pytest.fixture(scope="module")
def unets():
    cache = {}

    def get(shape, in_channels=4):
        if (shape, in_channels) not in cache:
            cache[shape, in_channels] = build_unet(shape, in_channels)
        return cache[shape, in_channels]

    return get


def build_controlnet(ext, shape, seed=11):
    """cldm.PlugableControlModel with the U-Net's structure (an SD1/SDXL ControlNet's config), random weights."""
    config = {k: v for k, v in unet_params(shape).items() if k not in ("image_size", "out_channels")}
    config.update(in_channels=4, hint_channels=3, use_fp16=False)
    if shape == "sdxl":
        config.update(num_classes="sequential", adm_in_channels=ADM)
    torch.manual_seed(seed)
    model = ext.cldm.PlugableControlModel(config)
    _randomize_zero_layers(model)
    return model.eval().requires_grad_(False)


def control_params(ext, model, hint, weight=1.0, kind=CONTROLNET):
    """A ControlParams as controlnet.py builds it for a plain unit (no hires hint, no soft injection)."""
    model_type = ext.hook.ControlModelType.ControlNet if kind == CONTROLNET else ext.hook.ControlModelType.T2I_Adapter
    return ext.hook.ControlParams(
        control_model=model, preprocessor={"name": "canny", "threshold_a": 100, "threshold_b": 200}, hint_cond=hint,
        weight=weight, guidance_stopped=False, start_guidance_percent=0.0, stop_guidance_percent=1.0,
        advanced_weighting=None, control_model_type=model_type, hr_hint_cond=None,
        global_average_pooling=False, soft_injection=False, cfg_injection=False)


def inputs(unet, hw, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    context_dim = next(m.attn2.to_k.in_features for m in unet.modules() if hasattr(m, "attn2"))
    x = torch.randn(batch, unet.input_blocks[0][0].in_channels, *hw, generator=g)
    kwargs = {"context": torch.randn(batch, 5, context_dim, generator=g)}
    if hasattr(unet, "label_emb"):
        kwargs["y"] = torch.randn(batch, ADM, generator=g)
    hint = torch.rand(batch, 3, hw[0] * 8, hw[1] * 8, generator=g)
    return x, torch.full((batch,), 700.0), kwargs, hint


# -- running the real hook --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def hooked(ext, unet, params):
    """UnetHook.hook as controlnet.py calls it in process(), restore() as in postprocess()."""
    network = ext.hook.UnetHook(lowvram=False)
    process = SimpleNamespace(sample=lambda *args, **kwargs: None)
    network.hook(unet, SimpleNamespace(is_sdxl=hasattr(unet, "label_emb")), params, process)
    try:
        yield network
    finally:
        network.restore()
        unet.__dict__.pop("forward", None)  # restore() leaves the class's bound forward as an instance attribute


@pytest.fixture
def seen(ext, monkeypatch):
    """What the real aligned_adding got (skip size, residual size) and every interpolation hook.py's code made."""
    record = SimpleNamespace(adds=[], resizes=[])
    aligned_adding, interpolate = ext.hook.aligned_adding, torch.nn.functional.interpolate

    def recording_adding(base, x, require_channel_alignment):
        if isinstance(x, torch.Tensor):
            record.adds.append((tuple(base.shape[-2:]), tuple(x.shape[-2:])))
        return aligned_adding(base, x, require_channel_alignment)

    def recording_interpolate(input, *args, **kwargs):
        if sys._getframe(1).f_globals.get("__name__") == ext.hook.__name__:  # aligned_adding or TorchHijackForUnet.cat
            record.resizes.append((tuple(input.shape[-2:]), kwargs.get("size"), kwargs.get("mode")))
        return interpolate(input, *args, **kwargs)

    monkeypatch.setattr(ext.hook, "aligned_adding", recording_adding)
    monkeypatch.setattr(torch.nn.functional, "interpolate", recording_interpolate)
    return record


def record_outputs(modules):
    """Forward hooks recording each module's output, in order; registered after HiDiffusion's (pooled skips)."""
    found = []
    hooks = [m.register_forward_hook(lambda module, args, output: found.append(output)) for m in modules]
    return found, hooks


def run(ext, unet, models_and_hints, x, t, kwargs, settings, step, patch=True, kind=CONTROLNET):
    """One U-Net call through the real hook, HiDiffusion applied at ``step`` and (or not) each unit patched, as
    hidiffusion_ext.webui does it (patch_control with the unit's control_model and, for a ControlNet, its cldm).

    Returns (output, handle, residuals of the first unit as its model returned them, skips and middle as the U-Net
    stored them)."""
    params = [control_params(ext, model, hint, weight, kind) for model, hint, weight in models_and_hints]
    with torch.no_grad(), hooked(ext, unet, params), apply_hidiffusion(unet, settings, steps=STEPS, seed=1) as handle:
        handle.set_step(step)
        for param in params if patch else ():
            encoder = param.control_model.control_model if kind == CONTROLNET else None
            handle.patch_control(kind, param.control_model, encoder, "label")
        residuals, skips, hooks = [], [], []
        if params:
            residuals, hooks = record_outputs([params[0].control_model.control_model])
            skips, more = record_outputs([*unet.input_blocks, unet.middle_block])
            hooks += more
        try:
            out = unet(x, t, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
    assert handle.removed
    return out, handle, (residuals[0] if residuals else []), skips


def nothing_left_on(model):
    return all("forward" not in vars(m) and not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# -- tests ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", ["sd1", "sdxl"])
def test_real_hook_adds_every_residual_at_its_skips_size(ext, unets, seen, shape, size):
    unet = unets(shape)
    settings, step, expected = PHASES[shape]["both"]
    model = build_controlnet(ext, shape)
    before = cn.fingerprint(model)
    x, t, kwargs, hint = inputs(unet, SIZES[size])

    plain, _, _, _ = run(ext, unet, [], x, t, kwargs, settings, step)
    out, handle, residuals, skips = run(ext, unet, [(model, hint, 1.0)], x, t, kwargs, settings, step)

    assert (handle.geometry_for(SIZES[size]).rad, handle.geometry_for(SIZES[size]).pool) == expected == (True, True)
    assert len(residuals) == len(unet.input_blocks) + 1 == len(skips)
    assert [r.shape for r in residuals] == [s.shape for s in skips]  # the raw cldm outputs, before any fitting
    assert len(seen.adds) == len(residuals) and all(base == added for base, added in seen.adds)
    assert seen.resizes == []  # aligned_adding never resized (nor did the decoder's torch.cat hijack)
    assert handle.stats.control_units == 1 and handle.stats.control_forwards == 1 and handle.stats.rad_forwards == 1
    assert (out - plain).abs().max() > 1e-3
    assert ext.callbacks == []  # restore() unregistered the guidance handler
    assert cn.same_fingerprint(cn.fingerprint(model), before) and nothing_left_on(model)

    seen.adds.clear()
    run(ext, unet, [(model, hint, 1.0)], x, t, kwargs, settings, step, patch=False)
    assert seen.resizes and any(base != added for base, added in seen.adds)  # unpatched: nearest resizes at deep levels


def test_two_units_both_follow_the_geometry(ext, unets, seen):
    unet = unets("sd1")
    settings, step, _ = PHASES["sd1"]["both"]
    first, second = build_controlnet(ext, "sd1", seed=11), build_controlnet(ext, "sd1", seed=12)
    x, t, kwargs, hint = inputs(unet, SIZES["odd"])
    one, _, _, _ = run(ext, unet, [(first, hint, 1.0)], x, t, kwargs, settings, step)
    two, handle, _, _ = run(ext, unet, [(first, hint, 1.0), (second, hint.flip(-1), 0.5)], x, t, kwargs, settings, step)
    assert seen.resizes == [] and all(base == added for base, added in seen.adds)
    assert handle.stats.control_units == 2 and handle.stats.control_forwards == 2
    assert (two - one).abs().max() > 1e-4
    assert nothing_left_on(first) and nothing_left_on(second)


def test_nine_channel_unet_no_longer_crashes_in_the_inpaint_path(ext, unets, seen):
    """hook.py feeds the ControlNet x[:, :4] (591-595) and puts each residual into zeros_like(skip) (251-254)."""
    unet = unets("sd1", 9)
    settings, step, _ = PHASES["sd1"]["both"]
    model = build_controlnet(ext, "sd1")
    x, t, kwargs, hint = inputs(unet, SIZES["nonsquare"])
    with pytest.raises(RuntimeError):  # unpatched: a stock-size residual into a skip the RAD shrank
        run(ext, unet, [(model, hint, 1.0)], x, t, kwargs, settings, step, patch=False)
    assert nothing_left_on(model)
    seen.adds.clear()
    seen.resizes.clear()
    out, handle, residuals, skips = run(ext, unet, [(model, hint, 1.0)], x, t, kwargs, settings, step)
    assert out.shape == (1, 4, *SIZES["nonsquare"]) and torch.isfinite(out).all()
    assert [r.shape[-2:] for r in residuals] == [s.shape[-2:] for s in skips] and seen.resizes == []
    assert handle.stats.control_forwards == 1


def test_t2i_adapter_features_are_fitted_where_the_hook_adds_them(ext, unets, seen):
    """scripts/adapter.py's PlugableAdapter (features computed once, then deep copies) around an SD1.5 T2I Adapter
    (sd15v2 layout: 3-channel hint, 1x1 kernels, skip connections, average-pool downsampling) for the test U-Net;
    hook.py adds its features to h after input blocks 2, 5, 8 and 11."""
    unet = unets("sd1")
    settings, step, _ = PHASES["sd1"]["both"]
    x, t, kwargs, hint = inputs(unet, SIZES["nonsquare"])
    torch.manual_seed(13)
    body = ext.adapter.Adapter(channels=[32, 64, 128, 128], nums_rb=2, cin=3 * 64, ksize=1, sk=True, use_conv=False,
                               is_sdxl=False)
    adapter = ext.adapter.PlugableAdapter(body).eval().requires_grad_(False)
    plain, _, _, _ = run(ext, unet, [], x, t, kwargs, settings, step)
    run(ext, unet, [(adapter, hint, 1.0)], x, t, kwargs, settings, step, patch=False, kind=T2I_ADAPTER)
    assert seen.resizes and any(base != added for base, added in seen.adds)  # unpatched: nearest at the shrunk levels
    seen.adds.clear()
    seen.resizes.clear()
    out, handle, _, _ = run(ext, unet, [(adapter, hint, 1.0)], x, t, kwargs, settings, step, kind=T2I_ADAPTER)
    assert len(seen.adds) == 4 and all(base == added for base, added in seen.adds) and seen.resizes == []
    assert handle.stats.control_units == 1 and (out - plain).abs().max() > 1e-3
    assert nothing_left_on(adapter)


@pytest.mark.parametrize("phase", ["rad", "pool", "both", "late"])
@pytest.mark.parametrize("shape", ["sd1", "sdxl"])
def test_real_cldm_residual_i_is_skip_i_bit_for_bit(ext, unets, seen, shape, phase, size="odd"):
    """The U-Net's encoder in the real cldm, identity zero convs, no hint: its geometry is the U-Net's, exactly.

    On the odd latent (every halving rounds up; the sizes test above covers the others). MSW-MSA is off: it windows
    the U-Net's self-attention, never the ControlNet's, so it would change the values."""
    unet = unets(shape)
    settings, step, expected = PHASES[shape][phase]
    settings = settings.replace(mswmsa=False)
    model = build_controlnet(ext, shape)
    with torch.no_grad():
        cn.copy_unet_encoder(model.control_model, unet)
    x, t, kwargs, hint = inputs(unet, SIZES[size])
    _, handle, residuals, skips = run(ext, unet, [(model, hint, 1.0)], x, t, kwargs, settings, step)
    assert (handle.geometry_for(SIZES[size]).rad, handle.geometry_for(SIZES[size]).pool) == expected
    assert len(residuals) == len(skips) == len(unet.input_blocks) + 1
    for i, (residual, skip) in enumerate(zip(residuals, skips, strict=True)):
        assert torch.equal(residual, skip), f"residual {i}: {tuple(residual.shape)} vs {tuple(skip.shape)}"
    assert seen.resizes == []
    assert handle.stats.control_units == 1 and handle.stats.control_forwards == int(any(expected))
    assert nothing_left_on(model)
