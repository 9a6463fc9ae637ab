"""The paper's algorithm on an ldm/sgm-shaped U-Net, with no host in sight: torch, einops and the standard library only.

- settings: every knob in one validated, immutable record (HiDiffusionSettings).
- unet_map: block roles derived from the module tree (UNetMap, inspect_unet).
- presets: family detection, the reference's ratio presets and size classes, block roles per family.
- schedule: which steps have the dilated downsample (RAD) and the block pooling.
- geometry: the per-forward decision (RAD on, pooling on) and the feature sizes it gives.
- raunet: RAU-Net's tensor operations (dilated conv, pool, restore, sized upsample).
- msw_msa: MSW-MSA's tensor operations (window grid, partition, reverse).
- shifts: where the window shifts come from (seeded per step by default).
- control_encoder: ControlNet encoders under the U-Net's geometry, and the guard that fits other residuals.
- pass_state: one sampling pass (step, decisions, shifts, statistics) and the contract every adapter's patch keeps.
- cost_model: multiply-adds of a U-Net forward per block, and what a resolved schedule saves.
"""
