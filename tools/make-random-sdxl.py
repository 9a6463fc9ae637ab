"""Build a random-weight SDXL base checkpoint (fp16, ~7 GB) in the real layout, offline (docs/forks.md, "SDXL").
Keys: model.diffusion_model.* (sgm UNetModel), conditioner.embedders.0.transformer.* (CLIP-L, transformers),
conditioner.embedders.1.model.* (OpenCLIP ViT-bigG-14 text tower), first_stage_model.* (VAE), so A1111
(modules/sd_models_config.py) and Forge (huggingface_guess) detect it as SDXL; --inpaint gives 9 U-Net input channels
(A1111 then picks configs/sd_xl_inpaint.yaml). Run from a webui root (needs repositories/generative-models) with its venv:
  cd /path/to/a1111 && HF_HOME=/path/to/hf_home HF_HUB_OFFLINE=1 venv/bin/python \
      /path/to/sd-webui-hidiffusion/tools/make-random-sdxl.py models/Stable-diffusion/random-sdxl.safetensors [--inpaint]
HF_HOME must hold openai/clip-vit-large-patch14's tokenizer and config (no weights are downloaded).
Peak RAM ~14 GB, ~100 s on 2 cores. Prints the file's sha256 and A1111's short hash (sha256[:10])."""
import argparse
import sys
import time

import torch
from random_checkpoint import offline_clip_l, report, rerandomise_zeros

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out")
parser.add_argument("--inpaint", action="store_true", help="9 input channels (latent + mask + masked latent)")
parser.add_argument("--seed", type=int, default=1)
opts = parser.parse_args()
started = time.time()

sys.path.insert(0, "repositories/generative-models")
import open_clip.model  # noqa: E402
import sgm.modules.encoders.modules as enc  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from sgm.util import instantiate_from_config  # noqa: E402

offline_clip_l(enc)
# bigG: no pretrained download, and no vision tower (1.8 B params sgm deletes anyway)
enc.open_clip.create_model_and_transforms = lambda arch, *a, **k: (open_clip.create_model(arch, pretrained=None), None, None)
open_clip.model._build_vision_tower = lambda *a, **k: torch.nn.Identity()

cfg = OmegaConf.load("repositories/generative-models/configs/inference/sd_xl_base.yaml").model.params
if opts.inpaint:
    cfg.network_config.params.in_channels = 9
torch.manual_seed(opts.seed)
noise = torch.Generator().manual_seed(1000 + opts.seed)


def build(prefix, config):
    """Instantiate one part (fp32), re-randomise what is initialised to zero, return its tensors in fp16."""
    module = instantiate_from_config(config)
    redone = rerandomise_zeros(module, noise)  # all-zero layers: else every image is the same, HiDiffusion on or off
    print(f"{prefix}: {sum(p.numel() for p in module.parameters()) / 1e6:.0f} M params, re-randomised {redone}")
    module.half()  # in place: never an fp32 and an fp16 copy of the U-Net at once
    return {prefix + k: v.contiguous() for k, v in module.state_dict().items()}


state = build("conditioner.", cfg.conditioner_config)
state = {k: v for k, v in state.items() if "embedders.0." in k or "embedders.1." in k}  # the size embedders hold none
state.update(build("first_stage_model.", cfg.first_stage_config))
state.update(build("model.diffusion_model.", cfg.network_config))
save_file(state, opts.out)

report(opts.out, len(state), started)
