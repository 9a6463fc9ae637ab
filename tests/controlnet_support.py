"""ControlNet test support: a ControlNet-shaped encoder built from ldm's own blocks, and a stand-in for
sd-webui-controlnet's U-Net hook loop (both for CPU tests with random weights).

Faithful to sd-webui-controlnet v1.1.455 (commit 67271170):
- ControlEncoder mirrors scripts/cldm.py ControlNet: the input hint block (lines 163-180), input blocks and a zero
  conv after each (the U-Net's encoder, lines 181-282, make_zero_conv 349-350), the middle block and its zero conv,
  and forward (352-400): hint added after input block 0, a zero conv output per input block, then the middle's.
  Its time embedding, input blocks and middle block are those of a real ldm UNetModel built with the same params.
- PlugableControlModel mirrors cldm.py 18-32 (``forward`` hands everything to ``control_model``);
  PlugableAdapter (T2I) mirrors adapter.py 47-74 (features computed once, then deep copies).
- hook_forward mirrors hook.py's forward (472-836) on its ControlNet/T2I path: the per-unit loop (595-700: inpaint
  channel slice, ``param.control_model(x=..., hint=..., ...)``, scales, sums per index), the encoder with T2I
  injection after blocks [2, 5, 8, 11] / [3, 5, 8] (799-812), the middle block (814-822) and the decoder (824-831),
  all through ``aligned_adding`` (244-265), which resizes a mismatch with nearest. ``RESIZES`` records each such
  resize, so a test can assert that none happened. install_hook/remove_hook mirror UnetHook.hook's instance forward
  (hook.py 990-993) and restore().
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential, UNetModel
from ldm.modules.diffusionmodules.util import timestep_embedding
from torch import nn

from hidiffusion_ext import HiDiffusionSettings

RESIZES = []  # (base size, residual size) of every nearest resize aligned_adding made

# The exactness cases, shared by the stand-in tests and the CONTROLNET_DIR ones.
STEPS = 10
SIZES = {"square": (32, 32), "nonsquare": (40, 24), "odd": (33, 25)}
# (settings, step, expected (RAD, pool)) per phase; N = 10.
PHASES = {
    "sd1": {
        "rad": (HiDiffusionSettings(t1=0.7, t2=0.3), 4, (True, False)),
        "pool": (HiDiffusionSettings(t1=0.3, t2=0.7), 4, (False, True)),
        "both": (HiDiffusionSettings(t1=0.7, t2=0.3), 0, (True, True)),
        "late": (HiDiffusionSettings(t1=0.7, t2=0.3), 8, (False, False)),
    },
    "sdxl": {
        "rad": (HiDiffusionSettings(), 0, (True, False)),  # aggressive: RAD at step 0, pooling 1-3
        "pool": (HiDiffusionSettings(), 2, (False, True)),
        "both": (HiDiffusionSettings(t1=0.7, t2=0.3, aggressive="off"), 0, (True, True)),
        "late": (HiDiffusionSettings(), 8, (False, False)),
    },
}


def copy_unet_encoder(controlnet: nn.Module, unet: nn.Module) -> None:
    """The exactness setup: the U-Net's encoder weights, identity zero convs and a hint block that adds zeros.

    Works for this file's ControlEncoder and for sd-webui-controlnet's own cldm.ControlNet (same attribute names).
    """
    for name in ("time_embed", "input_blocks", "middle_block", "label_emb"):
        if hasattr(unet, name):
            getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict())
    for zero_conv in [*controlnet.zero_convs, controlnet.middle_block_out]:
        conv = zero_conv[0]
        conv.weight.copy_(torch.eye(conv.in_channels).view(conv.in_channels, conv.in_channels, 1, 1))
        conv.bias.zero_()
    last = controlnet.input_hint_block[-1]
    last.weight.zero_()
    last.bias.zero_()


class ControlEncoder(nn.Module):
    def __init__(self, params: dict, hint_channels: int = 3, seed: int = 11):
        super().__init__()
        torch.manual_seed(seed)
        params = {**params, "in_channels": 4}  # hook.py feeds a 9-channel U-Net's ControlNet x[:, :4]
        base = UNetModel(**params)
        self.model_channels = base.model_channels
        self.time_embed, self.input_blocks, self.middle_block = base.time_embed, base.input_blocks, base.middle_block
        channels = block_channels(base, params)
        self.zero_convs = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(c, c, 1)) for c in channels[:-1]])
        self.middle_block_out = TimestepEmbedSequential(nn.Conv2d(channels[-1], channels[-1], 1))
        mc = params["model_channels"]
        self.input_hint_block = TimestepEmbedSequential(
            nn.Conv2d(hint_channels, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 16, 3, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.SiLU(), nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 96, 3, padding=1, stride=2), nn.SiLU(), nn.Conv2d(96, 96, 3, padding=1), nn.SiLU(),
            nn.Conv2d(96, 256, 3, padding=1, stride=2), nn.SiLU(), nn.Conv2d(256, mc, 3, padding=1))
        self.eval().requires_grad_(False)

    def forward(self, x, hint, timesteps, context, y=None, **kwargs):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, repeat_only=False))
        guided_hint = self.input_hint_block(hint, emb, context)
        outs, h = [], x
        for module, zero_conv in zip(self.input_blocks, self.zero_convs):
            if guided_hint is not None:
                h = module(h, emb, context)
                h += guided_hint
                guided_hint = None
            else:
                h = module(h, emb, context)
            outs.append(zero_conv(h, emb, context))
        h = self.middle_block(h, emb, context)
        outs.append(self.middle_block_out(h, emb, context))
        return outs

    def copy_unet_encoder(self, unet: nn.Module) -> ControlEncoder:
        copy_unet_encoder(self, unet)
        return self


def block_channels(unet: nn.Module, params: dict):
    """Output channels of each input block, then of the middle block (from one small forward)."""
    found = []
    hooks = [b.register_forward_hook(lambda m, a, o: found.append(o.shape[1])) for b in [*unet.input_blocks, unet.middle_block]]
    try:
        with torch.no_grad():
            unet(torch.zeros(1, params["in_channels"], 16, 16), torch.zeros(1),
                 context=torch.zeros(1, 2, params["context_dim"]))
    finally:
        for hook in hooks:
            hook.remove()
    return found


class PlugableControlModel(nn.Module):
    def __init__(self, control_model: nn.Module):
        super().__init__()
        self.control_model = control_model

    def forward(self, *args, **kwargs):
        return self.control_model(*args, **kwargs)


class StockAdapter(nn.Module):
    """A T2I-Adapter body: features at 1, 1/2, 1/4, 1/8 of the latent (adapter.py Adapter with downsample layers)."""

    def __init__(self, channels, hint_channels: int = 3, seed: int = 12):
        super().__init__()
        torch.manual_seed(seed)
        self.unshuffle = nn.PixelUnshuffle(8)
        self.body = nn.ModuleList([nn.Conv2d(hint_channels * 64 if i == 0 else channels[i - 1], c, 3, padding=1,
                                             stride=1 if i == 0 else 2) for i, c in enumerate(channels)])

    def forward(self, x):
        x, hs = self.unshuffle(x), []
        for conv in self.body:
            x = conv(x)
            hs.append(x)
        return hs


class PlugableAdapter(nn.Module):
    def __init__(self, control_model: nn.Module):
        super().__init__()
        self.control_model = control_model
        self.control = None

    def forward(self, hint=None, x=None, *args, **kwargs):
        if self.control is not None:
            return copy.deepcopy(self.control)
        self.control = self.control_model(hint)
        return copy.deepcopy(self.control)


def control_type(name: str):
    """ControlModelType's members as the extension names them (enums.py 160-187)."""
    return SimpleNamespace(name=name, is_controlnet=name in ("ControlNet", "ControlLoRA", "InstantID", "ControlNetUnion"))


def unit(model, kind="ControlNet", hint=None, weight=1.0):
    """A ControlParams with what the ControlNet/T2I path reads."""
    return SimpleNamespace(control_model=model, control_model_type=control_type(kind), weight=weight, used_hint_cond=hint)


def aligned_adding(base, x, require_channel_alignment):
    if isinstance(x, float):
        if x == 0.0:
            return base
        return base + x
    if require_channel_alignment:
        zeros = torch.zeros_like(base)
        zeros[:, : x.shape[1], ...] = x
        x = zeros
    base_h, base_w = base.shape[-2:]
    xh, xw = x.shape[-2:]
    if xh > 1 or xw > 1:
        if base_h != xh or base_w != xw:
            RESIZES.append(((base_h, base_w), (xh, xw)))
            x = F.interpolate(x, size=(base_h, base_w), mode="nearest")
    return base + x


def hook_forward(unet, x, timesteps=None, context=None, params=(), is_sdxl=False, **kwargs):
    total_t2i = [0.0] * 4
    total_cn = [0.0] * (10 if is_sdxl else 13)
    require_inpaint_hijack = False
    for param in params:
        kind = param.control_model_type
        if not (kind.is_controlnet or kind.name == "T2I_Adapter"):
            continue
        x_in = x
        control_model = param.control_model.control_model
        if kind.is_controlnet and x.shape[1] != control_model.input_blocks[0][0].in_channels and x.shape[1] == 9:
            x_in = x[:, :4, ...]
            require_inpaint_hijack = True
        control = param.control_model(x=x_in, hint=param.used_hint_cond, timesteps=timesteps, context=context, y=None)
        scales = [param.weight] * (10 if is_sdxl else 13)
        control = [c * scale for c, scale in zip(control, scales)]
        target = total_cn if kind.is_controlnet else total_t2i
        for idx, item in enumerate(control):
            target[idx] = item + target[idx]
    hs = []
    emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels, repeat_only=False))
    h = x
    for i, module in enumerate(unet.input_blocks):
        h = module(h, emb, context)
        if i in ([3, 5, 8] if is_sdxl else [2, 5, 8, 11]):
            h = aligned_adding(h, total_t2i.pop(0), require_inpaint_hijack)
        hs.append(h)
    h = unet.middle_block(h, emb, context)
    h = aligned_adding(h, total_cn.pop(), require_inpaint_hijack)
    if len(total_t2i) > 0 and is_sdxl:
        h = aligned_adding(h, total_t2i.pop(0), require_inpaint_hijack)
    for module in unet.output_blocks:
        h = torch.cat([h, aligned_adding(hs.pop(), total_cn.pop(), require_inpaint_hijack)], dim=1)
        h = module(h, emb, context)
    return unet.out(h.type(x.dtype))


def install_hook(unet, params, is_sdxl=False):
    """UnetHook.hook: the U-Net instance's forward becomes the hook loop; remove_hook is its restore()."""
    unet.forward = lambda x, timesteps=None, context=None, **kw: hook_forward(unet, x, timesteps, context, params, is_sdxl)


def remove_hook(unet):
    unet.__dict__.pop("forward", None)


class ControlNetScript:
    """sd-webui-controlnet's Script as HiDiffusion sees it (controlnet.py): title "ControlNet" (319-320); process()
    builds ``latest_network`` with one ControlParams per enabled unit and hooks the U-Net (1199-1202, 1226-1229);
    postprocess() restores it (1298-1299)."""

    def __init__(self, units, names):
        self.units, self.names, self.latest_network, self.enabled_units = units, names, None, []

    def title(self):
        return "ControlNet"

    def process(self, p):
        self.enabled_units = [SimpleNamespace(model=name) for name in self.names]
        self.latest_network = SimpleNamespace(control_params=self.units)
        install_hook(p.sd_model.model.diffusion_model, self.units)

    def postprocess(self, p, processed):
        remove_hook(p.sd_model.model.diffusion_model)
        self.latest_network = None


def fingerprint(module: nn.Module):
    """Everything a patch could leave on a control model: instance forwards, hooks, conv geometry, weights."""
    return ({name: ("forward" in vars(m), len(m._forward_hooks), len(m._forward_pre_hooks),
                    getattr(m, "stride", None), getattr(m, "padding", None), getattr(m, "dilation", None))
             for name, m in module.named_modules()},
            {k: v.clone() for k, v in module.state_dict().items()})


def same_fingerprint(a, b) -> bool:
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
