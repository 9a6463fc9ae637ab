"""A LoRA under HiDiffusion, on each webui's own LoRA code from a checkout (each test skips without its checkout).

The LoRA is tools/make-random-lora.py's, made from a checkpoint file of the test U-Net: the Downsample conv that RAU-Net
dilates (input_blocks.3.0.op) and the first linears of the top-level attention, which MSW-MSA windows. It is loaded by
the webui's own code from a Lora folder, then each test checks, on a real ldm (or the host's own) U-Net:
- on a RAD step, the dilated Downsample computes with the LoRA-changed weight: its output equals the reference's dilated
  conv (stride 4, padding 2, dilation 2) on the merged weight W + alpha/rank * up @ down, and differs from it on W;
- on a RAD step (A1111: and a later one), the whole U-Net output equals HiDiffusion on a twin whose weights were merged
  by hand;
- after the pass, with the LoRA taken off the webui's own way, nothing of ours or of the LoRA's is left: every weight is
  bit-equal to before, the Downsample has its stock geometry and no instance forward, and the output is bit-equal to the
  stock output computed before the LoRA was loaded.

Hosts:
- A1111_DIR (tested at v1.10.1): extensions-builtin/Lora in both of its modes: the weights merged into the module in place
  (network_apply_weights, the default) and the LoRA applied in the forward (Settings > Compatibility, opts.lora_functional:
  network_forward adds the LoRA's own up(down(x)) to the conv's output).
- FORGE_DIR (Forge main): sd_forge_lora's load_networks, whose UnetPatcher.add_patches LoRA is merged into the weights when
  the model loads (LoraLoader.refresh), and load_lora_for_models(online_mode=True), merged per forward in
  backend/operations.py (what load_networks does for fp8/gguf models with the online-LoRA option).
- CLASSIC_DIR / REFORGE_DIR / NEO_DIR: the fork's LoRA extension load_networks (ldm_patched: ModelPatcher.patch_model
  merges on load, unpatch_model restores on unload), through tests/fork_backend.py's host.
The webui ``modules.*`` the extensions import are small stand-ins (tests/lora_host.py); the extension files are the real ones.
"""

import importlib.util
import inspect
import os
from types import SimpleNamespace

import lora_host
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_unet

from hidiffusion_ext import HiDiffusionSettings, apply_hidiffusion
from hidiffusion_ext.core.presets import block_roles, plan_for
from hidiffusion_ext.core.unet_map import inspect_unet
from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params
from hidiffusion_ext.forge.unet_patch import patch_forge_unet

A1111_DIR = os.environ.get("A1111_DIR", "")
A1111_LORA = os.path.join(A1111_DIR, "extensions-builtin", "Lora", "networks.py")
needs_a1111 = pytest.mark.skipif(not os.path.isfile(A1111_LORA), reason="set A1111_DIR to a stable-diffusion-webui checkout")

SETTINGS, STEPS, SEED = HiDiffusionSettings(t1=0.7, t2=0.3), 10, 1234
RUN_STEPS = (0, 8)  # sd1 at 32x32 with T1 0.7: step 0 is a RAD step (and pools), step 8 runs neither
FORGE_RUN_STEPS = (0,)  # the Forge hosts' CPU U-Net forward is slower: the RAD step only
SIZE, LINEARS, RANK = (32, 32), 6, 4
RAD_GEOMETRY = dict(stride=4, padding=2, dilation=2)  # the reference's RAU-Net downsampler (hidiffusion 0.1.10)
TOLERANCE = 1e-5  # the same weights merged in another order: fp32 rounding only


def make_random_lora():
    spec = importlib.util.spec_from_file_location("make_random_lora", os.path.join(ROOT, "tools", "make-random-lora.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = make_random_lora()


def write_lora(unet, lora_dir, name, tmp_path):
    """The tool run on a checkpoint file of ``unet``; returns (LoRA tensors as written, [(kohya name, U-Net key)])."""
    from safetensors.torch import load_file, save_file

    checkpoint = str(tmp_path / "checkpoint.safetensors")
    save_file({TOOL.UNET + k: v.contiguous() for k, v in unet.state_dict().items()}, checkpoint)
    path = os.path.join(lora_dir, name + ".safetensors")
    TOOL.main([checkpoint, path, "--rank", str(RANK), "--linears", str(LINEARS), "--te-linears", "0",
               "--strength", "0.5", "--seed", "7", "--dtype", "fp32"])
    shapes = TOOL.checkpoint_shapes(checkpoint)
    targets = [(kohya, key[len(TOOL.UNET):-len(".weight")]) for kohya, key, _ in TOOL.lora_targets(shapes, LINEARS)]
    assert targets[0] == ("lora_unet_down_blocks_0_downsamplers_0_conv", "input_blocks.3.0.op")
    assert all(".attn" in module or ".ff." in module for _, module in targets[1:]) and len(targets) == 1 + LINEARS
    return load_file(path), targets


def merged_state(state, lora, targets):
    merged = dict(state)
    for kohya, module in targets:
        merged[module + ".weight"] = TOOL.merged_weight(state[module + ".weight"], lora, kohya)
    return merged


def rad_downsample(unet):
    block = unet.input_blocks[block_roles(inspect_unet(unet), plan_for("sd15")).rad_block]
    return block[0]


def record_calls(module):
    """(input, output) of each call of ``module`` (a forward hook: the instance forward ours may install still runs)."""
    calls = []
    handle = module.register_forward_hook(lambda m, args, output: calls.append((args[0].clone(), output.clone())))
    return calls, handle


def check_rad_step(calls, state, lora, downsample_key):
    """The RAD Downsample's one call: the dilated conv on the merged weight, not on the stock one."""
    assert len(calls) == 1, f"the RAD Downsample ran {len(calls)} times in one U-Net forward"
    x, y = calls[0]
    weight, bias = state[downsample_key + ".weight"], state[downsample_key + ".bias"]
    merged = TOOL.merged_weight(weight, lora, "lora_unet_down_blocks_0_downsamplers_0_conv")
    expected = F.conv2d(x, merged, bias, **RAD_GEOMETRY)
    assert y.shape == expected.shape == (*x.shape[:2], -(-x.shape[2] // 4), -(-x.shape[3] // 4))
    assert rel(y, expected) <= TOLERANCE
    assert rel(y, F.conv2d(x, weight, bias, **RAD_GEOMETRY)) > 1e-2  # the LoRA's change is there


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def inputs(context_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, *SIZE, generator=g), torch.randn(2, 7, context_dim, generator=g)


def instance_forwards(model):
    return [name for name, m in model.named_modules() if "forward" in m.__dict__]


def hooked(model):
    return [name for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def assert_stock_geometry(downsample):
    assert (downsample.op.stride, downsample.op.padding, downsample.op.dilation) == ((2, 2), (1, 1), (1, 1))
    assert "forward" not in downsample.__dict__ and "forward" not in downsample.op.__dict__


# -- A1111 ------------------------------------------------------------------------------------------------------------
@pytest.fixture
def a1111(tmp_path_factory):
    """A1111's Lora extension, its Conv2d/Linear/... forwards installed for this test only."""
    with lora_host.a1111_lora(A1111_DIR, str(tmp_path_factory.mktemp("Lora"))) as extension:
        yield extension


class _LatentDiffusion(torch.nn.Module):
    """What networks.assign_network_names_to_compvis_modules (networks.py:122-148) walks: sd_model.model is the
    DiffusionWrapper holding ``diffusion_model``; no text encoder here (the LoRA has no lora_te keys)."""

    def __init__(self, unet):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.diffusion_model = unet
        self.cond_stage_model = torch.nn.Module()
        self.is_sdxl = False


@needs_a1111
@pytest.mark.parametrize("functional", [False, True], ids=["weights-patched", "lora-functional"])
def test_a1111_lora_acts_on_rad_steps_and_leaves_nothing(a1111, functional, tmp_path):
    networks, shared, errors_seen = a1111
    unet, twin = build_ldm_unet(unet_params("sd1"), seed=1), build_ldm_unet(unet_params("sd1"), seed=1)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    name = f"random_lora_{'functional' if functional else 'patched'}"
    lora, targets = write_lora(unet, shared.cmd_opts.lora_dir, name, tmp_path)
    twin.load_state_dict(merged_state(state, lora, targets))
    shared.sd_model = _LatentDiffusion(unet)
    networks.assign_network_names_to_compvis_modules(shared.sd_model)  # its on_model_loaded callback
    shared.opts.lora_functional = functional
    x, context = inputs(unet_params("sd1")["context_dim"])
    stock = run_unet(unet, x, context=context)  # A1111's forwards installed, no LoRA loaded

    networks.load_networks([name], [1.0], [1.0], [None])  # extra_networks_lora.py:45 for <lora:NAME:1>
    hook = SimpleNamespace(remove=lambda: None)
    try:
        assert not errors_seen, errors_seen
        assert [net.name for net in networks.loaded_networks] == [name]
        expected = {"diffusion_model_" + module.replace(".", "_") for _, module in targets}
        assert set(networks.loaded_networks[0].modules) == expected  # every layer of the file matched
        calls, hook = record_calls(rad_downsample(unet))
        with apply_hidiffusion(unet, SETTINGS, steps=STEPS, seed=SEED) as handle, \
                apply_hidiffusion(twin, SETTINGS, steps=STEPS, seed=SEED) as twin_handle:
            for step in RUN_STEPS:
                handle.set_step(step)
                twin_handle.set_step(step)
                ours = run_unet(unet, x, context=context)
                if step == RUN_STEPS[0]:
                    assert handle.stats.rad_forwards == 1
                    check_rad_step(calls, state, lora, "input_blocks.3.0.op")
                assert rel(ours, run_unet(twin, x, context=context)) <= TOLERANCE, f"step {step}"
            assert handle.stats.rad_forwards == 1 and handle.stats.windowed_calls > 0
    finally:
        hook.remove()
        # the next generation without it: modules/extra_networks.py:140-145 activates every extra network, an
        # unmentioned one with an empty list, so extra_networks_lora.py:45 calls load_networks([], ...)
        networks.load_networks([], [], [], [])
    after = run_unet(unet, x, context=context)  # in-place mode restores its backups at this forward (networks.py:411-)
    assert torch.equal(after, stock)
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    assert_stock_geometry(rad_downsample(unet))
    assert instance_forwards(unet) == [] and hooked(unet) == []


# -- Forge and its forks -------------------------------------------------------------------------------------------------
FORGE_HOSTS = ("FORGE_DIR", "CLASSIC_DIR", "REFORGE_DIR", "NEO_DIR")


def _forge_param(var, mode):
    present = bool(lora_host.forge_lora_dir(os.environ.get(var, "")))
    return pytest.param(var, mode, id=f"{var.split('_')[0].lower()}-{mode}",
                        marks=pytest.mark.skipif(not present, reason=f"set {var} to a checkout with its LoRA extension"))


@pytest.fixture(scope="module")
def forge_host(request, tmp_path_factory):
    """(fork_backend host, the LoRA extension's networks module, modules.shared stand-in, errors) for one checkout."""
    from fork_backend import fork_host

    fork_dir = os.environ[request.param]
    with fork_host(fork_dir) as host, lora_host.forge_lora(fork_dir, str(tmp_path_factory.mktemp("Lora"))) as extension:
        yield SimpleNamespace(host=host, networks=extension[0], shared=extension[1], errors=extension[2], var=request.param)


def lora_keys(patcher):
    """The model keys the patcher carries LoRA patches for (Forge main: lora_patches per file; ldm_patched: patches)."""
    if hasattr(patcher, "lora_patches"):
        return {key for patches in patcher.lora_patches.values() for key in patches}
    return set(patcher.patches)


def as_detected(patcher):
    """num_res_blocks per level, as the hosts' model detection writes it (huggingface_guess / ldm_patched model_detection)
    and as their LoRA key maps read it (unet_to_diffusers indexes it per level); the fork hosts build from an int."""
    model = patcher.model
    configs = [getattr(model.diffusion_model, "config", None), getattr(getattr(model, "model_config", None), "unet_config", None)]
    for config in configs:
        if isinstance(config, dict) and isinstance(config.get("num_res_blocks"), int):
            config["num_res_blocks"] = [config["num_res_blocks"]] * len(config["channel_mult"])
    if getattr(model, "config", None) is not None and not hasattr(model.config, "huggingface_repo"):
        model.config.huggingface_repo = "runwayml/stable-diffusion-v1-5"  # huggingface_guess' SD15 (Forge reads it for Flux)
    return patcher


def online_loras(model):
    return [name for name, m in model.named_modules() if hasattr(m, "forge_online_loras")]


@pytest.mark.parametrize("forge_host, mode", [_forge_param(var, mode) for var in FORGE_HOSTS for mode in ("merged", "online")
                                              if mode == "merged" or var in ("FORGE_DIR", "NEO_DIR")],
                         indirect=["forge_host"])
def test_forge_lora_acts_on_rad_steps_and_leaves_nothing(forge_host, mode, tmp_path):
    host, networks, shared = forge_host.host, forge_host.networks, forge_host.shared
    online = mode == "online"
    if online and "online_mode" not in inspect.signature(networks.load_lora_for_models).parameters:
        pytest.skip(f"{forge_host.var}: no online LoRA mode")
    params = unet_params("sd1")
    ldm = build_ldm_unet(params, seed=1)
    state = {k: v.clone() for k, v in ldm.state_dict().items()}
    name = f"random_lora_{mode}"
    lora, targets = write_lora(ldm, shared.cmd_opts.lora_dir, name, tmp_path)
    patcher = as_detected(host.build_patcher(params, state))
    twin = host.build_patcher(params, merged_state(state, lora, targets))
    unet = patcher.model.diffusion_model
    options, sigma = dict(patcher.model_options), (lambda step: torch.tensor([14.6 * 0.7**step]))
    x, context = inputs(params["context_dim"])
    x = x[:1]
    stock = host.denoise(patcher, x, context, sigma(0))

    shared.sd_model = lora_host.forge_sd_model(patcher)
    if online:  # what load_networks does with dynamic_args["online_lora"] on an fp8/gguf model (networks.py:102-123)
        path = os.path.join(shared.cmd_opts.lora_dir, name + ".safetensors")
        shared.sd_model.forge_objects.unet, _ = networks.load_lora_for_models(
            patcher, None, networks.load_lora_state_dict(path), 1.0, 1.0, filename=path, online_mode=True)
    else:
        networks.load_networks([name], [1.0], [1.0], [None])  # extra_networks_lora.py activate() for <lora:NAME:1>
    assert not forge_host.errors, forge_host.errors
    lora_patcher = shared.sd_model.forge_objects.unet
    assert lora_patcher is not patcher
    assert lora_keys(lora_patcher) == {f"diffusion_model.{module}.weight" for _, module in targets}

    downsample = rad_downsample(unet)
    calls, hook = record_calls(downsample)
    result = patch_forge_unet(lora_patcher, SETTINGS, steps=STEPS, seed=SEED)
    twin_result = patch_forge_unet(twin, SETTINGS, steps=STEPS, seed=SEED)
    try:
        for step in FORGE_RUN_STEPS:
            result.set_step(step)
            twin_result.set_step(step)
            ours = host.denoise(result.patcher, x, context, sigma(step))
            if step == FORGE_RUN_STEPS[0]:
                assert result.stats.rad_forwards == 1
                assert bool(online_loras(unet)) == online  # the LoRA as this mode applies it
                check_rad_step(calls, state, lora, "input_blocks.3.0.op")
            assert rel(ours, host.denoise(twin_result.patcher, x, context, sigma(step))) <= TOLERANCE, f"step {step}"
        assert result.stats.rad_forwards == 1 and result.stats.windowed_calls > 0
    finally:
        hook.remove()
        result.remove()
        twin_result.remove()
        # the next generation without it: processing.py resets forge_objects from forge_objects_original and the
        # extension's activate() calls load_networks([]), which puts the LoRA-free patcher back
        shared.sd_model.forge_objects = shared.sd_model.forge_objects_original.shallow_copy()
        networks.load_networks([], [], [], [])
    assert shared.sd_model.forge_objects.unet is patcher
    after = host.denoise(patcher, x, context, sigma(0))  # loading it takes the LoRA off the weights
    assert torch.equal(after, stock)
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    assert online_loras(unet) == []
    assert_stock_geometry(downsample)
    assert instance_forwards(unet) == [] and hooked(unet) == []
    assert patcher.model_options == options and patcher.object_patches == {}
    host.unload(patcher)
    host.unload(twin)
