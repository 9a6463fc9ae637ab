"""HiDiffusion on Forge and its forks: patches added to a clone of the ``UnetPatcher``, as the built-ins do.

The input patcher is never changed and nothing global is: the clone carries every patch, and dropping it is the
undo. Block roles, presets and step semantics are the ldm adapter's (ldm/unet_patch.py); where that adapter hooks
modules, this one uses only the patch points every Forge-lineage U-Net forward calls (Forge main, Neo, Classic,
reForge main and newmain_newforge; design.md §15):
- an input_block_patch reads the latent size at ("input", 0) and fixes the plan of each U-Net forward, pools input
  block pool_block (before the host stores the skip, as the reference does), and runs the RAD Downsample's conv
  dilated while its block runs (forge/downsample.py: no object patch, Neo's cannot carry a module);
- an output_block_patch restores the pooled path on output block restore_block's output;
- Forge's Upsample already interpolates to the next skip's size (output_shape = hs[-1].shape; design.md §4.4);
- attn1 replace patches window q/k/v on the MSW-MSA transformers (forge/attention.py), around the host's kernel;
- a ControlNet model function wrapper runs every ControlNet encoder under the same geometry (forge/controlnet.py),
  or, for ControlNet objects that never read it (reForge main), an override of the encoder's forward for the pass;
  a conditioning modifier keeps RAU-Net off for control types that cannot follow it (T2I-Adapter, LLLite).
Patches are plain closures: Forge deep-copies model_options on clone(), which would copy a bound method's
object, and a clone of this clone (ControlNet makes one) must still share this pass's state.
"""
from __future__ import annotations

import logging
from typing import List, Mapping, Optional, Tuple

from ..core.pass_state import ForwardState, HiDiffusionPass, checked_arguments
from ..core.presets import BlockRoles, block_roles, detect_family, is_non_aggressive_model, plan_for
from ..core.settings import HiDiffusionSettings
from ..core.shifts import ShiftRng, make_shift_source
from ..core.unet_map import UNetMap, UnsupportedModelError, inspect_unet, is_downsample, is_upsample, transformer_blocks
from . import attention as forge_attention
from . import controlnet
from .downsample import RadSwitch, stock_conv

log = logging.getLogger("hidiffusion")

UNET_PATH = "diffusion_model"  # object-patch names are dotted paths from the KModel
TAG = "_hidiffusion_forge"  # marks this adapter's patches, so re-patching a patched patcher never stacks them
NOT_A_UNET = "not applied: Flux/SD3/Chroma are not U-Nets"
REFINER = "not applied: SDXL refiner layout not supported"

AttnKey = Tuple[str, int, int]  # Forge's attn1 replace key: (block name, block index, transformer index)


class ForgeHiDiffusion(HiDiffusionPass):
    """One sampling pass: ``patcher`` is the patched clone, ``set_step(i)`` before each sampler step."""

    def __init__(self, unet_map: UNetMap, family: str, roles: BlockRoles, settings: HiDiffusionSettings,
                 steps: int, shifts, non_aggressive_model: bool, attention=None):
        super().__init__(unet_map, family, roles, settings, steps, shifts, non_aggressive_model)
        self.patcher = None
        self._attention = attention
        self._encoders = controlnet.EncoderOverrides(self)  # only for ControlNets that never call the wrapper
        self._rad: Optional[RadSwitch] = None

    def remove(self) -> None:
        """The clone is the undo (the host drops it); from now on its patches also pass everything through."""
        self.removed = True
        self._state = ForwardState()
        self._encoders.undo()
        if self._rad is not None:
            self._rad.off()

    def stand_down(self, note: str) -> None:
        """Run nothing of ours from now on (another tool does the same job on this model), and say why."""
        self.add_note(note)
        self.remove()

    # -- what the patches do -----------------------------------------------------------------------------
    def _windowed_attn1(self, index: int, attend, q, k, v, extra_options, per_window: bool = False):
        shape = extra_options.get("original_shape")
        if self.removed or shape is None:  # not in a pass's U-Net forward
            return attend(q, k, v, extra_options)
        if k.shape[1] != q.shape[1] or q.shape[0] != int(shape[0]):
            # another tool re-cut this call's tokens before us (HyperTile folds its tiles into the batch, reference
            # attention adds keys): its attention as it built it; the windows stay wherever it does not
            self.stats.yielded_window_calls += 1
            return attend(q, k, v, extra_options)
        grid = self.window_grid(index, q.shape[1], (int(shape[-2]), int(shape[-1])))
        if grid is None:
            return attend(q, k, v, extra_options)
        return forge_attention.windowed(attend, q, k, v, extra_options, grid, per_window)

    # -- installation on the clone -----------------------------------------------------------------------
    def _install(self, clone, rad_conv, attn_keys: List[AttnKey], n_outputs: int) -> None:
        # Only patch points every host's U-Net forward calls (design.md §15): Forge main, Neo, Classic and reForge
        # all run input_block_patch before storing a skip and output_block_patch before the concat; reForge main
        # never calls block modifiers.
        first_block, pool_block = ("input", 0), ("input", self.roles.pool_block)
        before_rad, rad_block = ("input", self.roles.rad_block - 1), ("input", self.roles.rad_block)
        self._rad = RadSwitch(rad_conv) if rad_conv is not None else None
        after_restore, last_block = ("output", self.roles.restore_block + 1), ("output", n_outputs - 1)

        def input_patch(h, transformer_options):
            block = transformer_options.get("block")
            if self.removed:
                return h
            if block == first_block:  # input block 0 is the conv_in: nothing before it depends on the plan
                if self._rad is not None:
                    self._rad.off()  # left on by a forward that raised inside the RAD block
                shape = transformer_options.get("original_shape") or h.shape
                self.begin_forward((int(shape[-2]), int(shape[-1])))
            if self._rad is not None:
                if block == rad_block:
                    self._rad.off()  # the RAD block has run
                elif block == before_rad and self._state.rad:
                    self._rad.on()  # for the next block only: the Downsample leaving the RAD level
            if block == pool_block and self._state.pool:
                h = self.pool(h)  # before the host stores the skip, as the reference pools
            return h

        def output_patch(h, hsp, transformer_options):
            block = transformer_options.get("block")
            if self.removed:
                return h, hsp
            if block == after_restore:
                h = self.restore(h)  # output block restore_block's output, before the next block's concat
            if block == last_block:
                self.end_forward()  # the pass's time ends one output block (and the out conv) early
            return h, hsp

        clone.set_model_input_block_patch(_tag(input_patch))
        clone.set_model_output_block_patch(_tag(output_patch))
        clone.add_conditioning_modifier(_tag(self._resampling_watch()))
        if self.settings.raunet:
            prior = clone.model_options.get("transformer_options", {}).get(controlnet.WRAPPER_KEY)
            clone.set_controlnet_model_function_wrapper(_tag(controlnet.controlnet_wrapper(self, prior)))
            clone.add_conditioning_modifier(_tag(controlnet.control_watch(self, self._encoders)))
        if self.settings.mswmsa:
            replaces = _attn1_replaces(clone)
            for index, key in enumerate(attn_keys):
                prior = replaces.get(key) or replaces.get(key[:2])  # another extension's kernel, windowed
                attend = forge_attention.self_attention(prior, self._attention)
                # another tool's attention (StyleAlign's shared attention) runs once per window (design.md §11.7)
                replace = self._attn1_replace(index, attend, prior is not None, replaces.get(key))
                clone.set_model_attn1_replace(_tag(replace), *key)

    def _resampling_watch(self):
        """A conditioning modifier: another RAU-Net that object-patched the Downsample/Upsample forwards on a clone
        made after ours (so after our check in patch_forge_unet) stands us down before the first U-Net call."""
        def watch(model, *rest):
            if not self.removed:
                found = other_resampling_modules(getattr(model, UNET_PATH, None))
                if found:
                    self.stand_down(other_rau_net_note(found))
            return (model, *rest)

        return watch

    def _attn1_replace(self, index: int, attend, per_window: bool, prior=None):
        def attn1_replace(q, k, v, extra_options):
            return self._windowed_attn1(index, attend, q, k, v, extra_options, per_window)

        attn1_replace._hidiffusion_prior = prior  # the replace on this exact key, put back when a later pass strips ours
        return attn1_replace


def patch_forge_unet(
    unet_patcher,
    settings: Optional[HiDiffusionSettings] = None,
    *,
    steps: int,
    seed: Optional[int] = None,
    model_name: str = "",
    shift_rng: ShiftRng = None,
    attention=None,
    unet_map: Optional[UNetMap] = None,
) -> ForgeHiDiffusion:
    """A clone of ``unet_patcher`` (in ``.patcher``) with HiDiffusion added for a pass of ``steps`` steps.

    Raises UnsupportedModelError (a ValueError) before cloning anything when the model cannot be patched.
    ``attention`` replaces Forge's attention kernel (tests only); ``shift_rng`` is as in apply_hidiffusion;
    ``unet_map`` is the structure map when the caller has already inspected the U-Net (one inspection per pass).
    """
    settings = checked_arguments(settings, steps, seed)
    unet, unet_map = _inspect(unet_patcher) if unet_map is None else (_unet_of(unet_patcher), unet_map)
    family = detect_family(unet_map, settings.family, model_name)
    roles = block_roles(unet_map, plan_for(family))
    n_outputs = len(unet.output_blocks)
    if roles.restore_block + 1 >= n_outputs:  # restored on the next output block's input (design.md §15)
        raise UnsupportedModelError(f"not applied: the pooled path would be restored after the last output block "
                                    f"({roles.restore_block})")
    attn_keys = windowed_attn1_keys(unet, roles)
    has_rad = settings.raunet and family != "sdxl_turbo"  # the reference has no RAD for Turbo (design.md §4.2)
    rad_conv = _rad_conv(unet_patcher, unet, roles) if has_rad else None
    shifts = make_shift_source(shift_rng, seed, len(attn_keys))
    non_aggressive = is_non_aggressive_model(unet_map, model_name)
    attention = attention or forge_attention.host_attention(unet)
    handle = ForgeHiDiffusion(unet_map, family, roles, settings, steps, shifts, non_aggressive, attention)
    others = other_resampling_patches(unet_patcher, unet)
    if others:  # e.g. neo_jankhidiffusion ran before us: never stack two RAU-Nets
        handle.patcher = unet_patcher
        handle.stand_down(other_rau_net_note(others))
        return handle
    clone = unet_patcher.clone()
    _strip_own_patches(clone)
    note = controlnet.blocker(controlnet.linked_controlnets(getattr(clone, "controlnet_linked_list", None)),
                              clone.model_options)
    if settings.raunet and note:
        handle.skip_raunet(note)
    handle._install(clone, rad_conv, attn_keys, n_outputs)
    handle.patcher = clone
    return handle


def without_hidiffusion(unet_patcher):
    """``unet_patcher`` itself, or, when an earlier pass's patches are on it (a host that does not reset
    forge_objects before the hires pass), a clone without them: a pass never sees another pass's patch."""
    options = unet_patcher.model_options.get("transformer_options", {})
    lists = [*options.get("patches", {}).values(), *options.values(), *unet_patcher.model_options.values()]
    tagged = (any(isinstance(v, list) and any(_is_tagged(p) for p in v) for v in lists)
              or any(_is_tagged(p) for p in _attn1_replaces(unet_patcher).values())
              or _is_tagged(options.get(controlnet.WRAPPER_KEY)))
    if not tagged:
        return unet_patcher
    clone = unet_patcher.clone()
    _strip_own_patches(clone)
    return clone


def other_resampling_patches(unet_patcher, unet) -> List[str]:
    """Object patches another extension put on this patcher's Downsample/Upsample modules or their forwards."""
    found = []
    for name, obj in getattr(unet_patcher, "object_patches", {}).items():
        if not name.startswith(UNET_PATH + "."):
            continue
        path = name[len(UNET_PATH) + 1:]
        path = path[:-len(".forward")] if path.endswith(".forward") else path
        try:
            target = unet.get_submodule(path)
        except AttributeError:
            continue
        if is_downsample(target) or is_upsample(target):
            found.append(f"{name} ({type(obj).__name__})")
    return found


def other_resampling_modules(unet) -> List[str]:
    """Downsample/Upsample modules of the loaded U-Net whose forward another extension replaced on the instance."""
    if unet is None or not hasattr(unet, "named_modules"):
        return []
    return [f"{UNET_PATH}.{name}.forward ({type(m.__dict__['forward']).__name__})" for name, m in unet.named_modules()
            if "forward" in m.__dict__ and (is_downsample(m) or is_upsample(m))]


def other_rau_net_note(found: List[str]) -> str:
    return (f"not applied: another extension already rewrites this U-Net's Downsample/Upsample ({', '.join(found[:2])}"
            f"{', ...' if len(found) > 2 else ''}), e.g. neo_jankhidiffusion's RAU-Net; HiDiffusion ran nothing rather "
            f"than stack two RAU-Nets")


def forge_unsupported_reason(unet_patcher) -> Optional[str]:
    """None when HiDiffusion can patch this UnetPatcher, else a one-line message for the user. Never raises."""
    try:
        _inspect(unet_patcher)
    except UnsupportedModelError as error:
        return str(error) if str(error).startswith("not applied") else f"not applied: {error}"
    except Exception as error:  # a model shape nobody foresaw must not break generation
        return f"not applied: could not inspect the model ({type(error).__name__}: {error})"
    return None


def windowed_attn1_keys(unet, roles: BlockRoles) -> List[AttnKey]:
    """Forge keys of the MSW-MSA self-attentions, in ldm.unet_patch.windowed_transformers' order (same seeded shifts)."""
    keys = []
    for name, blocks, indices in (("input", unet.input_blocks, roles.window_inputs),
                                  ("output", unet.output_blocks, roles.window_outputs)):
        for i in indices:
            keys += [(name, i, t) for t in range(len(transformer_blocks(blocks[i])))]
    return keys


def _unet_of(unet_patcher):
    unet = getattr(getattr(unet_patcher, "model", None), UNET_PATH, None)
    if unet is None:
        raise UnsupportedModelError("not applied: no U-Net found on this model")
    return unet


def _inspect(unet_patcher) -> Tuple[object, UNetMap]:
    unet = _unet_of(unet_patcher)
    config = getattr(unet, "config", None)
    config = config if isinstance(config, Mapping) else {}  # Forge's U-Nets carry their config; ldm modules do not
    if config and config.get("model_channels") is None:
        raise UnsupportedModelError(NOT_A_UNET)
    try:
        return unet, inspect_unet(unet)
    except UnsupportedModelError:
        # The structure decides; the config only names the common refusal (4 levels with SDXL's vector input).
        if len(config.get("channel_mult") or ()) == 4 and config.get("adm_in_channels") is not None:
            raise UnsupportedModelError(REFINER) from None
        raise


def _rad_conv(unet_patcher, unet, roles: BlockRoles):
    """The conv of the Downsample that becomes the RAD (of the module another extension's object patch puts there)."""
    block = unet.input_blocks[roles.rad_block]
    child = next(name for name, m in block.named_children() if is_downsample(m))
    name = f"{UNET_PATH}.input_blocks.{roles.rad_block}.{child}"
    current = getattr(unet_patcher, "object_patches", {}).get(name, getattr(block, child))
    try:
        return stock_conv(current)
    except ValueError as error:
        raise UnsupportedModelError(f"not applied: another extension replaced {name} ({error})") from None


def _attn1_replaces(patcher) -> dict:
    return patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})


def _strip_own_patches(clone) -> None:
    """Drop HiDiffusion patches an earlier call left on this patcher's line (the clone's options are its own copy)."""
    options = clone.model_options.setdefault("transformer_options", {})
    for holder in (options.get("patches", {}), options, clone.model_options):
        for name, patches in list(holder.items()):
            if isinstance(patches, list) and any(_is_tagged(p) for p in patches):
                holder[name] = [p for p in patches if not _is_tagged(p)]
    replaces = _attn1_replaces(clone)
    for key in [k for k, p in replaces.items() if _is_tagged(p)]:
        prior = getattr(replaces[key], "_hidiffusion_prior", None)  # another extension's replace we windowed
        if prior is None:
            del replaces[key]
        else:
            replaces[key] = prior
    wrapper = options.get(controlnet.WRAPPER_KEY)
    if _is_tagged(wrapper):  # an earlier pass's ControlNet wrapper: restore what it had chained
        options.pop(controlnet.WRAPPER_KEY)
        if wrapper._hidiffusion_prior is not None:
            options[controlnet.WRAPPER_KEY] = wrapper._hidiffusion_prior


def _tag(fn):
    setattr(fn, TAG, True)
    return fn


def _is_tagged(fn) -> bool:
    return getattr(fn, TAG, False) is True


def is_own_forge_patch(fn) -> bool:
    """A patch this adapter installed (the conflict check looks past them)."""
    return _is_tagged(fn)
