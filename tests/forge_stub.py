"""A small stand-in for Forge's UnetPatcher contract, driving the REAL ldm U-Net blocks in Forge's order.

Only what the HiDiffusion Forge adapter uses, copied in behaviour (not code) from stable-diffusion-webui-forge
main (dfdcbab6):
- backend/patcher/base.py, unet.py: clone() shares the module, deep-copies model_options, shallow-copies
  object_patches; the patch setters; object patches applied while loaded (forge_patch_model / forge_unpatch_model);
- backend/memory_management.py: a loaded clone keeps its object patches until another clone of the model loads;
- backend/sampling/sampling_function.py: per call, conds carry the ControlNet, conditioning modifiers run, and
  transformer_options is a shallow copy of model_options["transformer_options"] plus cond_or_uncond and sigmas;
  each linked ControlNet gets those options, then get_control runs before the U-Net (calc_cond_uncond_batch 260-268);
- backend/patcher/controlnet.py: ControlNet.get_control (292-339: the previous unit first, the model function
  wrapper or the model itself, control_merge) and control_merge (225-265: outputs to 'output' and 'middle', summed
  per index with the previous unit's); the stub skips the timestep range, weighting and the sigma scaling of x;
- backend/nn/unet.py apply_control (44-52): a residual that cannot be added is dropped with
  "warning control could not be applied";
- backend/nn/unet.py: the U-Net forward order (block modifiers, input_block_patch before hs.append,
  output_block_patch before a plain torch.cat), TimestepEmbedSequential's dispatch with Upsample(output_shape=hs[-1]
  .shape), SpatialTransformer setting block_index, and BasicTransformerBlock's attn1 replace lookup.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules.openaimodel import TimestepBlock, Upsample
from ldm.modules.diffusionmodules.util import timestep_embedding
from torch import nn


class StubKModel(nn.Module):
    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model


class StubUnetPatcher:
    def __init__(self, model: nn.Module):
        self.model = model
        self.object_patches = {}
        self.object_patches_backup = {}
        self.model_options = {"transformer_options": {}}
        self.controlnet_linked_list = None
        self.clones_made = 0

    def add_patched_controlnet(self, cnet):
        cnet.previous_controlnet = self.controlnet_linked_list
        self.controlnet_linked_list = cnet

    def set_transformer_option(self, k, v):
        self.model_options.setdefault("transformer_options", {})[k] = v

    def set_controlnet_model_function_wrapper(self, wrapper):
        self.set_transformer_option("controlnet_model_function_wrapper", wrapper)

    @classmethod
    def around(cls, unet: nn.Module) -> StubUnetPatcher:
        return cls(StubKModel(unet))

    def clone(self) -> StubUnetPatcher:
        self.clones_made += 1
        n = StubUnetPatcher(self.model)
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.controlnet_linked_list = self.controlnet_linked_list
        return n

    def set_model_patch(self, patch, name):
        to = self.model_options["transformer_options"]
        to.setdefault("patches", {})
        to["patches"][name] = to["patches"].get(name, []) + [patch]

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        to = self.model_options["transformer_options"].copy()
        to["patches_replace"] = dict(to.get("patches_replace", {}))
        to["patches_replace"][name] = dict(to["patches_replace"].get(name, {}))
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        to["patches_replace"][name][key] = patch
        self.model_options["transformer_options"] = to

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_input_block_patch(self, patch):
        self.set_model_patch(patch, "input_block_patch")

    def set_model_output_block_patch(self, patch):
        self.set_model_patch(patch, "output_block_patch")

    def add_block_modifier(self, modifier):
        self.model_options["transformer_options"].setdefault("block_modifiers", []).append(modifier)

    def add_conditioning_modifier(self, modifier):
        self.model_options.setdefault("conditioning_modifiers", []).append(modifier)

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def forge_patch_model(self):
        for name, obj in self.object_patches.items():
            parent, attr = _parent(self.model, name)
            self.object_patches_backup.setdefault(name, getattr(parent, attr))
            setattr(parent, attr, obj)

    def forge_unpatch_model(self):
        for name, obj in self.object_patches_backup.items():
            parent, attr = _parent(self.model, name)
            setattr(parent, attr, obj)
        self.object_patches_backup = {}


def _parent(root, dotted):
    *path, attr = dotted.split(".")
    for name in path:
        root = getattr(root, name)
    return root, attr


class StubForge:
    """Loading and one denoiser call per step, as Forge's memory manager and sampling_function do them."""

    def __init__(self):
        self.loaded = None

    def load(self, patcher):
        if self.loaded is not patcher:
            self.unload()
            patcher.forge_patch_model()
            self.loaded = patcher

    def unload(self):
        if self.loaded is not None:
            self.loaded.forge_unpatch_model()
            self.loaded = None

    def denoise(self, patcher, x, timesteps, context, sigmas=None):
        """One U-Net call on a batch (the rows being cond and uncond); returns the U-Net output."""
        self.load(patcher)
        cond = [{"control": patcher.controlnet_linked_list}]
        uncond = [{"control": patcher.controlnet_linked_list}]
        for modifier in patcher.model_options.get("conditioning_modifiers", []):
            args = modifier(patcher.model, x, sigmas, uncond, cond, 7.0, patcher.model_options, 0)
            x, uncond, cond = args[1], args[3], args[4]
        to = patcher.model_options["transformer_options"].copy()
        to["cond_or_uncond"] = [0, 1]
        to["sigmas"] = sigmas
        control = None
        with torch.no_grad():
            if patcher.controlnet_linked_list is not None:
                p = patcher.controlnet_linked_list
                while p is not None:
                    p.transformer_options = to
                    p = p.previous_controlnet
                control = patcher.controlnet_linked_list.get_control(x, timesteps, {"c_crossattn": context}, 2)
            return unet_forward(patcher.model.diffusion_model, x, timesteps, context, to, control)


class StubControlNet:
    """backend/patcher/controlnet.py ControlNet, on what get_control does with its inner model's outputs."""

    def __init__(self, control_model, hint, strength=1.0):
        self.control_model, self.cond_hint, self.strength = control_model, hint, strength
        self.previous_controlnet, self.transformer_options, self.device = None, {}, hint.device

    def get_control(self, x_noisy, t, cond, batched_number):
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number)
        wrapper = self.transformer_options.get("controlnet_model_function_wrapper", None)
        if wrapper is not None:
            control = wrapper(x=x_noisy, hint=self.cond_hint, timesteps=t.float(), context=cond["c_crossattn"], y=None,
                              model=self, inner_model=self.control_model)
        else:
            control = self.control_model(x=x_noisy, hint=self.cond_hint.to(self.device), timesteps=t.float(),
                                         context=cond["c_crossattn"], y=None)
        return self.control_merge(control, control_prev)

    def control_merge(self, control_output, control_prev):
        out = {"input": [], "middle": [], "output": []}
        for i, x in enumerate(control_output):
            key = "middle" if i == len(control_output) - 1 else "output"
            out[key].append(x * self.strength)
        if control_prev is not None:
            for key in ("input", "middle", "output"):
                o = out[key]
                for i, prev_val in enumerate(control_prev[key]):
                    if i >= len(o):
                        o.append(prev_val)
                    elif prev_val is not None:
                        o[i] = prev_val if o[i] is None else o[i] + prev_val  # Forge: o[i] += prev_val
        return out


def apply_control(h, control, name):
    if control is not None and name in control and len(control[name]) > 0:
        ctrl = control[name].pop()
        if ctrl is not None:
            try:
                h += ctrl
            except Exception:
                print("warning control could not be applied", h.shape, ctrl.shape)
    return h


def attention_function(q, k, v, heads, mask=None):
    """backend.attention's contract: (B, N, heads*d) in and out; the same einsum kernel as ldm's CrossAttention."""
    b, _, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d) for t in (q, k, v))
    sim = torch.einsum("b i d, b j d -> b i j", q, k) * d**-0.5
    out = torch.einsum("b i j, b j d -> b i d", sim.softmax(dim=-1), v)
    return out.reshape(b, heads, -1, d).permute(0, 2, 1, 3).reshape(b, -1, inner)


def unet_forward(unet, x, timesteps, context, to, control=None):
    to["original_shape"] = list(x.shape)
    to["transformer_index"] = 0
    patches = to.get("patches", {})
    emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels).to(x.dtype))
    hs, h = [], x
    for i, block in enumerate(unet.input_blocks):
        to["block"] = ("input", i)
        h = _modified(h, "before", to)
        h = apply_control(_run_block(block, h, emb, context, to), control, "input")
        h = _modified(h, "after", to)
        for patch in patches.get("input_block_patch", []):
            h = patch(h, to)
        hs.append(h)
    to["block"] = ("middle", 0)
    h = apply_control(_run_block(unet.middle_block, _modified(h, "before", to), emb, context, to), control, "middle")
    h = _modified(h, "after", to)
    for j, block in enumerate(unet.output_blocks):
        to["block"] = ("output", j)
        hsp = apply_control(hs.pop(), control, "output")
        for patch in patches.get("output_block_patch", []):
            h, hsp = patch(h, hsp, to)
        h = torch.cat([h, hsp], dim=1)  # no resize: Forge raises on a size mismatch
        output_shape = hs[-1].shape if hs else None
        h = _modified(_run_block(block, _modified(h, "before", to), emb, context, to, output_shape), "after", to)
    to["block"] = ("last", 0)
    return _modified(unet.out(_modified(h, "before", to)), "after", to)


def _modified(h, when, to):
    for modifier in to.get("block_modifiers", []):
        h = modifier(h, when, to)
    return h


def _run_block(block, x, emb, context, to, output_shape=None):
    for layer in block:
        if isinstance(layer, TimestepBlock):
            x = layer(x, emb)
        elif isinstance(layer, SpatialTransformer):
            x = _spatial_transformer(layer, x, context, to)
            to["transformer_index"] += 1
        elif isinstance(layer, Upsample):
            size = [2 * x.shape[2], 2 * x.shape[3]] if output_shape is None else list(output_shape[2:4])
            x = F.interpolate(x, size=size, mode="nearest")
            x = layer.conv(x) if layer.use_conv else x
        else:
            x = layer(x)
    return x


def _spatial_transformer(st, x, context, to):
    b, c, h, w = x.shape
    x_in = x
    x = st.norm(x)
    x = x if st.use_linear else st.proj_in(x)
    x = x.permute(0, 2, 3, 1).reshape(b, h * w, -1)
    x = st.proj_in(x) if st.use_linear else x
    for i, block in enumerate(st.transformer_blocks):
        to["block_index"] = i
        x = _transformer_block(block, x, context, to)
    x = st.proj_out(x) if st.use_linear else x
    x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)
    x = x if st.use_linear else st.proj_out(x)
    return x + x_in


def _transformer_block(block, x, context, to):
    extra_options = {k: v for k, v in to.items() if k not in ("patches", "patches_replace")}
    attn1 = block.attn1
    extra_options["n_heads"] = attn1.heads
    extra_options["dim_head"] = attn1.to_q.out_features // attn1.heads
    replace = to.get("patches_replace", {}).get("attn1", {})
    key = (*to["block"], to["block_index"])
    key = key if key in replace else to["block"]
    n = block.norm1(x)
    if key in replace:
        n = attn1.to_out(replace[key](attn1.to_q(n), attn1.to_k(n), attn1.to_v(n), extra_options))
    else:
        n = attn1(n)
    x = x + n
    x = block.attn2(block.norm2(x), context=context) + x
    return block.ff(block.norm3(x)) + x
