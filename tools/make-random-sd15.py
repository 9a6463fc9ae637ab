"""Build a random-weight SD1.5 checkpoint (fp16, ~2 GB) from ldm's configs/v1-inference.yaml, offline (docs/forks.md).
Run from a webui root (needs configs/v1-inference.yaml and repositories/stable-diffusion-stability-ai) with its venv:
  cd /path/to/a1111 && HF_HOME=/path/to/hf_home HF_HUB_OFFLINE=1 venv/bin/python \
      /path/to/sd-webui-hidiffusion/tools/make-random-sd15.py models/Stable-diffusion/random-sd15.safetensors [--seed N]
HF_HOME must hold openai/clip-vit-large-patch14's tokenizer and config (no weights are downloaded).
Prints the file's sha256 and A1111's short hash (sha256[:10])."""
import argparse
import sys
import time

import torch
from random_checkpoint import offline_clip_l, report, rerandomise_zeros

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out")
parser.add_argument("--seed", type=int, default=0, help="0 gives random-sd15 (9da85defa7), 1 random-sd15-b (cbc5396847)")
opts = parser.parse_args()
started = time.time()

sys.path.insert(0, "repositories/stable-diffusion-stability-ai")
import ldm.modules.encoders.modules as enc  # noqa: E402
from ldm.util import instantiate_from_config  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

offline_clip_l(enc)

torch.manual_seed(opts.seed)
model = instantiate_from_config(OmegaConf.load("configs/v1-inference.yaml").model)

# all-zero layers (zero_module, zero biases) get random values: else every image is the same, HiDiffusion on or off
redone = rerandomise_zeros(model, torch.Generator().manual_seed(1000 + opts.seed))
print("re-randomised", redone)

# fp16 weights (like a pruned fp16 SD1.5); the schedule buffers (betas, alphas_cumprod, ...) stay fp32
state = {k: (v.half() if v.is_floating_point() and "." in k else v).contiguous() for k, v in model.state_dict().items()}
save_file(state, opts.out)

report(opts.out, len(state), started)
