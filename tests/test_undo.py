"""Removing HiDiffusion restores every module exactly: outputs bit-identical, no wrappers or hooks left."""

import pytest
import torch
from conftest import run_unet

from hidiffusion_ext import HiDiffusionSettings, active_handle, apply_hidiffusion, remove_hidiffusion


def module_fingerprint(unet):
    """Everything a patch could leave behind on any submodule."""
    return {
        name: (
            sorted(k for k in vars(m) if not k.startswith("_")),
            "forward" in vars(m),
            len(m._forward_hooks),
            len(m._forward_pre_hooks),
            getattr(m, "stride", None),
            getattr(m, "padding", None),
            getattr(m, "dilation", None),
        )
        for name, m in unet.named_modules()
    }


def state(unet):
    return {k: v.clone() for k, v in unet.state_dict().items()}


@pytest.fixture(params=["sd1", "sdxl"])
def unet(request, ldm_unet):
    return ldm_unet(request.param)


def test_remove_restores_outputs_and_modules(unet):
    x = torch.randn(1, 4, 40, 32)
    before, fingerprint, weights = run_unet(unet, x), module_fingerprint(unet), state(unet)
    handle = apply_hidiffusion(unet, steps=10, seed=3)
    handle.set_step(0)
    assert not torch.equal(run_unet(unet, x), before)
    handle.remove()
    assert torch.equal(run_unet(unet, x), before)
    assert module_fingerprint(unet) == fingerprint
    assert all(torch.equal(v, weights[k]) for k, v in unet.state_dict().items())
    assert active_handle(unet) is None


def test_exception_inside_patched_forward_then_remove(unet):
    """A forward that dies halfway (e.g. OOM inside the dilated conv) leaves nothing behind after remove."""
    x = torch.randn(1, 4, 32, 32)
    before, fingerprint = run_unet(unet, x), module_fingerprint(unet)

    def explode(module, args, output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with apply_hidiffusion(unet, steps=10) as handle:
            handle.set_step(0)
            victim = unet.output_blocks[4].register_forward_hook(explode)  # after RAD and pooling ran
            try:
                run_unet(unet, x)
            finally:
                victim.remove()
    assert module_fingerprint(unet) == fingerprint
    assert torch.equal(run_unet(unet, x), before)


def test_exception_inside_dilated_conv_restores_its_geometry(ldm_unet):
    unet = ldm_unet("sd1")
    op = unet.input_blocks[3][0].op
    geometry = (op.stride, op.padding, op.dilation, op._reversed_padding_repeated_twice)
    handle = apply_hidiffusion(unet, steps=10)
    hook = op.register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(RuntimeError("conv died")))
    try:
        with pytest.raises(RuntimeError, match="conv died"):
            run_unet(unet, torch.randn(1, 4, 32, 32))
    finally:
        hook.remove()
        handle.remove()
    assert (op.stride, op.padding, op.dilation, op._reversed_padding_repeated_twice) == geometry


def test_apply_twice_never_stacks(unet):
    x = torch.randn(1, 4, 32, 48)
    before, fingerprint = run_unet(unet, x), module_fingerprint(unet)
    first = apply_hidiffusion(unet, steps=10, seed=1)
    once = run_unet(unet, x)
    second = apply_hidiffusion(unet, steps=10, seed=1)
    assert first.removed and active_handle(unet) is second
    assert torch.equal(run_unet(unet, x), once)
    second.remove()
    first.remove()  # removing a stale handle is harmless
    assert torch.equal(run_unet(unet, x), before)
    assert module_fingerprint(unet) == fingerprint


def test_remove_hidiffusion_sweeps_patches_whose_handle_is_lost(unet):
    """e.g. the extension was reloaded: a new module copy finds the old wrappers by their tag."""
    from hidiffusion_ext import unet_patch

    x = torch.randn(1, 4, 32, 32)
    before, fingerprint = run_unet(unet, x), module_fingerprint(unet)
    apply_hidiffusion(unet, steps=10, settings=HiDiffusionSettings())
    unet_patch._ACTIVE.clear()  # forget the handle
    assert remove_hidiffusion(unet) is True
    assert module_fingerprint(unet) == fingerprint
    assert torch.equal(run_unet(unet, x), before)
    assert remove_hidiffusion(unet) is False


def test_foreign_instance_forward_on_attn1_is_kept(ldm_unet):
    """Another extension's instance-level attn1 wrapper (e.g. HyperTile) keeps working under ours and after."""
    unet = ldm_unet("sd1")
    attn = unet.input_blocks[1][1].transformer_blocks[0].attn1
    calls = []
    original = attn.forward

    def foreign(x, context=None, mask=None):
        calls.append(x.shape)
        return original(x, context=context, mask=mask)

    attn.forward = foreign
    try:
        with apply_hidiffusion(unet, steps=10):
            run_unet(unet, torch.randn(1, 4, 32, 32))
        assert calls and calls[0][0] == 4  # windows reached the foreign wrapper: 4 windows x batch 1
        assert attn.forward is foreign
    finally:
        del attn.forward
