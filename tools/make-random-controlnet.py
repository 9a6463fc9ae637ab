"""A random ControlNet checkpoint (ldm layout, keys control_model.*) for offline ControlNet requests (docs/forks.md).
SD1.5 or, when the checkpoint is SDXL (it has conditioner.embedders.1.* keys), a reduced SDXL ControlNet: by default
one transformer block per attention level (sd-webui-controlnet's controlnet_sdxl_mid_config, Forge's SDXL_mid_cnet),
the smallest layout both sd-webui-controlnet and Forge's built-in load from control_model.* keys; with --small none
(controlnet_sdxl_small_config, ~0.3 GB): sd-webui-controlnet loads it, Forge's built-in does not (it reads context_dim
from the transformer blocks and asserts it is set).
Encoder blocks copied from the checkpoint's U-Net (as a trained ControlNet starts), hint block and zero convs random
(non-zero, so the control shows). Built with the host's own cldm class; run in the host's venv from its root:
  Forge Classic (ldm_patched, SD1.5 only):
    venv/bin/python /path/to/sd-webui-hidiffusion/tools/make-random-controlnet.py \
        models/Stable-diffusion/random-sd15.safetensors models/ControlNet/control_random_sd15.safetensors
  A1111 with sd-webui-controlnet in extensions/sd-webui-controlnet (SD1.5 or SDXL):
    venv/bin/python /path/to/sd-webui-hidiffusion/tools/make-random-controlnet.py \
        models/Stable-diffusion/random-sdxl.safetensors models/ControlNet/control_random_sdxl.safetensors [--small]"""
import os
import sys
import time

import torch
from random_checkpoint import report
from safetensors import safe_open
from safetensors.torch import save_file

started = time.time()
small = "--small" in sys.argv
sys.argv, (src, dst) = sys.argv[:1], [a for a in sys.argv[1:] if a != "--small"][:2]  # hide ours from the host's parser
sys.path.insert(0, ".")
with safe_open(src, "pt") as f:
    sdxl = any(k.startswith("conditioner.embedders.1.") for k in f.keys())

if os.path.isdir("ldm_patched"):  # Forge Classic
    if sdxl:
        sys.exit("SDXL ControlNet: run this in A1111 with sd-webui-controlnet (its cldm class)")
    from ldm_patched.modules.args_parser import args

    args.always_cpu = True  # read by model_management at import
    from ldm_patched.controlnet.cldm import ControlNet

    config = dict(image_size=32, in_channels=4, model_channels=320, hint_channels=3, num_res_blocks=2,
                  attention_resolutions=[4, 2, 1], channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                  transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1, context_dim=768,
                  use_linear_in_transformer=False, legacy=False)
else:  # A1111 + sd-webui-controlnet; importing modules.paths puts repositories/ (sgm, ldm) on sys.path
    import modules.paths  # noqa: F401

    sys.path.insert(0, "extensions/sd-webui-controlnet")
    from scripts.cldm import ControlNet

    if sdxl:  # controlnet_model_guess.py picks its config from label_emb and the input_blocks.8.1 transformer keys
        depth = dict(attention_resolutions=[], transformer_depth=[0, 0, 0], transformer_depth_middle=0, context_dim=1) \
            if small else dict(attention_resolutions=[4], transformer_depth=[0, 0, 1], transformer_depth_middle=1,
                               context_dim=2048)
        config = dict(num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
                      num_res_blocks=2, channel_mult=[1, 2, 4], use_linear_in_transformer=True, num_head_channels=64,
                      **depth)
    else:  # its controlnet_default_config
        config = dict(in_channels=4, model_channels=320, num_res_blocks=2, attention_resolutions=[1, 2, 4],
                      transformer_depth=[1, 1, 1, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
                      use_linear_in_transformer=False, context_dim=768, num_heads=8)
    config.update(hint_channels=3, use_fp16=False)

torch.manual_seed(20251204)
net = ControlNet(**config)
out, copied = {}, 0
g = torch.Generator().manual_seed(1)
with safe_open(src, "pt") as f:  # read only the U-Net tensors the ControlNet shares, not the whole checkpoint
    unet = {k[len("model.diffusion_model."):]: k for k in f.keys() if k.startswith("model.diffusion_model.")}
    shared = {k: f.get_tensor(unet[k]) for k in net.state_dict() if k in unet}
for key, value in net.state_dict().items():
    if key in shared and shared[key].shape == value.shape:
        out["control_model." + key], copied = shared[key].to(torch.float16), copied + 1
    else:  # hint block and zero convs (non-zero here)
        fill = torch.ones if key.endswith("norm.weight") else (lambda *s, **k: torch.randn(*s, generator=g) * 0.02)
        out["control_model." + key] = fill(value.shape).to(torch.float16)
save_file(out, dst)
report(dst, len(out), started, f" ({'SDXL' if sdxl else 'SD1.5'}, {copied} copied from the U-Net)")
