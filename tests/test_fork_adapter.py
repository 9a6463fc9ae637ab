"""The script on a fork that hands the hires pass the first pass's patcher (no forge_objects reset before it), with
the Forge stand-in (tests/forge_stub.py) and the real ldm U-Net. Forge main, Neo, Classic 1f95d717 and reForge reset
forge_objects before every sampling pass; a fork that does not must still never run a pass on another pass's patch.
"""

import fake_webui

from hidiffusion_ext.forge.unet_patch import without_hidiffusion
from hidiffusion_ext.webui import session as webui_session

args = fake_webui.script_args


def run_without_reset(unet, script, apply_to):
    p = fake_webui.make_forge_p(unet, width=128, height=128, steps=3, enable_hr=True, hr_scale=2)
    base = p.sd_model.forge_objects.unet
    p.forge_original = None  # the host never resets forge_objects: the hires pass starts on what the first left
    seen = []
    denoise = p.forge_runtime.denoise
    p.forge_runtime.denoise = lambda patcher, *a, **k: seen.append(patcher) or denoise(patcher, *a, **k)
    fake_webui.process_images(p, script, args(apply_to=apply_to))
    assert not p.scripts.errors, p.scripts.errors
    p.forge_runtime.unload()
    return base, seen, webui_session.last.passes


def test_hires_pass_left_alone_runs_on_a_clone_without_the_first_pass_patch(ldm_unet, script):
    base, seen, passes = run_without_reset(ldm_unet("sd1"), script, "first pass")
    first, hires = seen[0], seen[-1]
    assert set(passes) == {(0, False)} and passes[(0, False)].patch.patcher is first
    assert without_hidiffusion(first) is not first  # the first pass ran patched
    assert hires is not first and without_hidiffusion(hires) is hires  # the hires pass: nothing of ours on it
    assert without_hidiffusion(base) is base


def test_hires_pass_patched_again_carries_one_set_of_patches(ldm_unet, script):
    _, seen, passes = run_without_reset(ldm_unet("sd1"), script, "both")
    hires = passes[(0, True)].patch
    assert seen[-1] is hires.patcher and hires.stats.forwards == 3
    patches = hires.patcher.model_options["transformer_options"]["patches"]
    assert len(patches["input_block_patch"]) == len(patches["output_block_patch"]) == 1
    assert len(hires.patcher.model_options["conditioning_modifiers"]) == 2


def test_xyz_found_by_what_it_has_when_moved_and_renamed():
    """Forge Neo moves the X/Y/Z script into extensions-builtin/xyz: found by its AxisOption API, not its file name."""
    from types import SimpleNamespace

    from hidiffusion_ext.webui import xyz_axes

    class AxisOption:
        def __init__(self, label, kind, apply, choices=None):
            self.label, self.kind, self.apply, self.choices = label, kind, apply, choices

    other = SimpleNamespace(script_class=type("S", (), {"__module__": "sd_forge_freeu.py"}), module=SimpleNamespace())
    xyz = SimpleNamespace(AxisOption=AxisOption, axis_options=[])
    data = [other, SimpleNamespace(script_class=type("S", (), {"__module__": "xyz_plot.py"}), module=xyz)]
    assert xyz_axes.register(data) and [o.label for o in xyz.axis_options] == [a[0] for a in xyz_axes.axes()]


def test_stripping_our_patches_puts_back_the_attn1_replace_we_windowed(ldm_unet):
    """Another extension's attn1 replace (HyperTile on the forks) that we windowed is back on the stripped clone."""
    from forge_stub import StubUnetPatcher

    from hidiffusion_ext.forge.unet_patch import patch_forge_unet

    base = StubUnetPatcher.around(ldm_unet("sd1"))

    def other(q, k, v, extra_options):
        return q

    base.set_model_attn1_replace(other, "input", 1, 0)  # the first windowed block of an SD1 U-Net
    ours = patch_forge_unet(base, steps=10, seed=1).patcher
    assert ours.model_options["transformer_options"]["patches_replace"]["attn1"][("input", 1, 0)] is not other
    clean = without_hidiffusion(ours)
    assert clean.model_options["transformer_options"]["patches_replace"]["attn1"] == {("input", 1, 0): other}
