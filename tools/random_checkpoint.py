"""What the random-checkpoint builders (tools/make-random-*.py) share: CLIP-L without a download, the layers a
checkpoint must not leave at zero, and the hashes a host shows."""
import hashlib
import os
import time

import torch


def offline_clip_l(encoders_module) -> None:
    """The host's CLIP-L embedder builds transformers' CLIPTextModel from its config (random weights) instead of
    downloading it; HF_HOME must hold openai/clip-vit-large-patch14's tokenizer and config."""
    import transformers

    encoders_module.CLIPTextModel.from_pretrained = staticmethod(
        lambda name, *a, **k: transformers.CLIPTextModel(transformers.CLIPTextConfig.from_pretrained(name)))


def rerandomise_zeros(module: torch.nn.Module, generator: torch.Generator) -> dict:
    """Give every all-zero parameter small random values; returns {kind: count}.

    ldm and sgm zero-initialise (zero_module) the U-Net's out.2, every ResBlock's out_layers.3 and every
    SpatialTransformer's proj_out, and norm biases start at zero: left so, the U-Net outputs all zeros and every image
    is the same, HiDiffusion on or off."""
    redone = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.numel() and torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
                kind = ".".join(name.split(".")[-2:])
                redone[kind] = redone.get(kind, 0) + 1
    return redone


def report(path: str, tensors: int, started: float, extra: str = "") -> str:
    """Print the file's size, build time, sha256 and A1111's short hash (sha256[:10]); returns the sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    sha = digest.hexdigest()
    print(f"{path}: {tensors} tensors{extra}, {os.path.getsize(path) / 2**30:.2f} GiB, {time.time() - started:.0f} s")
    print(f"sha256 {sha}  short hash {sha[:10]}")
    return sha
