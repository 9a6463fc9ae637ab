"""HiDiffusion on ldm/sgm ``UNetModel`` modules (A1111's SD1/SD2/SDXL): reversible submodule patches.

- patch_ledger: records every instance-forward override and hook so that undo restores each module exactly.
- unet_patch: the U-Net adapter (HiDiffusionHandle, apply_hidiffusion, remove_hidiffusion).
- control_patch: sd-webui-controlnet's units (ControlNet, T2I-Adapter) following the pass's RAU-Net geometry.
"""
