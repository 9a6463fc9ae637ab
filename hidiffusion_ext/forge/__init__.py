"""HiDiffusion on Forge: patches on a clone of its ``UnetPatcher``; dropping the clone is the undo.

- unet_patch: the U-Net adapter (ForgeHiDiffusion, patch_forge_unet, forge_unsupported_reason).
- downsample: the dilated downsampler, switched on for the RAD block between two input block patches.
- attention: MSW-MSA on Forge's attn1-replace contract (projected q, k, v).
- controlnet: Forge's ControlNet encoders under the pass's RAU-Net geometry (a model function wrapper).
"""
