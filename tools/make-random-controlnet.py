"""A random SD1.5 ControlNet checkpoint (ldm layout, keys control_model.*) for offline ControlNet requests (docs/forks.md).
Encoder blocks copied from the random SD1.5 checkpoint's U-Net (as a trained ControlNet starts), hint block and zero
convs random (non-zero, so the control shows). Run in Forge Classic's venv from its root:
  venv/bin/python /path/to/sd-webui-hidiffusion/tools/make-random-controlnet.py \
      models/Stable-diffusion/random-sd15.safetensors models/ControlNet/control_random_sd15.safetensors"""
import sys

import torch
from safetensors.torch import load_file, save_file

sys.argv, (src, dst) = sys.argv[:1], sys.argv[1:3]
sys.path.insert(0, ".")
from ldm_patched.modules.args_parser import args  # noqa: E402

args.always_cpu = True  # read by model_management at import
from ldm_patched.controlnet.cldm import ControlNet  # noqa: E402

config = dict(image_size=32, in_channels=4, model_channels=320, hint_channels=3, num_res_blocks=2,
              attention_resolutions=[4, 2, 1], channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
              transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1, context_dim=768,
              use_linear_in_transformer=False, legacy=False)
torch.manual_seed(20251204)
net = ControlNet(**config)
unet = {k[len("model.diffusion_model."):]: v for k, v in load_file(src).items() if k.startswith("model.diffusion_model.")}
out, copied = {}, 0
g = torch.Generator().manual_seed(1)
for key, value in net.state_dict().items():
    if key in unet and unet[key].shape == value.shape:
        out["control_model." + key], copied = unet[key].to(torch.float16), copied + 1
    else:
        fill = torch.ones if key.endswith("norm.weight") else (lambda *s, **k: torch.randn(*s, generator=g) * 0.02)
        out["control_model." + key] = fill(value.shape).to(torch.float16)
save_file(out, dst)
print(f"{dst}: {len(out)} tensors, {copied} copied from the U-Net")
