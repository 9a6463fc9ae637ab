"""A random LoRA for an SD1.x checkpoint, in kohya sd-scripts' key layout, to check that a LoRA and HiDiffusion compose.

The checkpoint (.safetensors, or a .ckpt state dict) is read only for module names and shapes. The LoRA written covers:
- the Downsample conv that RAU-Net dilates on its RAD steps, ``model.diffusion_model.input_blocks.3.0.op``, as a
  LoCon-style 3x3 conv LoRA named ``lora_unet_down_blocks_0_downsamplers_0_conv``;
- the first ``--linears`` attention / feed-forward linears of the U-Net's transformer blocks in execution order
  (``attn1``/``attn2`` ``to_q``/``to_k``/``to_v``/``to_out.0``, ``ff.net.0.proj``, ``ff.net.2``), so the top-level
  self-attention that MSW-MSA windows comes first, e.g. ``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``;
- the first ``--te-linears`` linears of the CLIP text encoder (``lora_te_text_model_encoder_layers_0_self_attn_q_proj``, ...;
  SD1's CLIP ViT-L only).
Keys are kohya's: ``<name>.lora_down.weight`` (rank x in[, kh, kw]), ``<name>.lora_up.weight`` (out x rank[, 1, 1]) and
``<name>.alpha``, with diffusers-style module names, which both A1111 (extensions-builtin/Lora/networks.py,
convert_diffusers_name_to_compvis) and Forge and its forks (model_lora_keys_unet via unet_to_diffusers) map.
Weights are seeded: down ~ N(0, 1/fan_in), up ~ N(0, strength^2/rank), alpha = rank, so each covered layer's output moves
by about ``strength`` (standard deviation, for unit inputs): the image changes.

Usage (stdlib + torch + safetensors):
  python tools/make-random-lora.py models/Stable-diffusion/sd15.safetensors models/Lora/random_lora.safetensors \\
      [--rank 4] [--linears 8] [--te-linears 4] [--strength 0.2] [--seed 1] [--dtype fp16]
then prompt with ``<lora:random_lora:1>``. Prints what it covered and the file's sha256.
Importable: ``build_lora(shapes, ...)`` takes {checkpoint key: shape} and returns the LoRA's tensors (tests/test_lora_real.py).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

UNET = "model.diffusion_model."
TE = "cond_stage_model.transformer.text_model."
RAD_CONV = "input_blocks.3.0.op"  # the first Downsample's conv (SD1/SD2): RAU-Net's resolution-aware downsampler
LINEAR = re.compile(r"\.transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))$")
TE_LINEAR = re.compile(r"^encoder\.layers\.(\d+)\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")


def num_res_blocks(unet_keys: Sequence[str]) -> int:
    """ResBlocks per level: the first Downsample sits at input block num_res_blocks + 1."""
    first = min(int(m.group(1)) for k in unet_keys if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.weight$", k)))
    return first - 1


def kohya_unet_name(module: str, res_blocks: int) -> Optional[str]:
    """kohya's (diffusers-style) LoRA name of an ldm U-Net module, for the Downsample convs and transformer blocks."""
    per_level = res_blocks + 1
    m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.+)$", module)
    if m:
        block, part, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, index = divmod(block - 1, per_level)
        if index == res_blocks and part == 0 and rest == "op":
            name = f"down_blocks.{level}.downsamplers.0.conv"
        elif index < res_blocks and part == 1:
            name = f"down_blocks.{level}.attentions.{index}.{rest}"
        else:
            return None
    elif (m := re.match(r"middle_block\.1\.(.+)$", module)):
        name = f"mid_block.attentions.0.{m.group(1)}"
    elif (m := re.match(r"output_blocks\.(\d+)\.1\.(transformer_blocks\..+)$", module)):
        level, index = divmod(int(m.group(1)), per_level)
        name = f"up_blocks.{level}.attentions.{index}.{m.group(2)}"
    else:
        return None
    return "lora_unet_" + name.replace(".", "_")


def _execution_order(module: str) -> Tuple[int, int, str]:
    m = re.match(r"(input_blocks|middle_block|output_blocks)\.(\d+)\.", module)
    return ({"input_blocks": 0, "middle_block": 1, "output_blocks": 2}[m.group(1)], int(m.group(2)), module)


def lora_targets(shapes: Dict[str, Sequence[int]], linears: int = 8, te_linears: int = 0) -> List[Tuple[str, str, tuple]]:
    """(kohya name, checkpoint key, weight shape) of each layer the LoRA covers: the RAD conv first."""
    unet = {k[len(UNET):-len(".weight")]: tuple(s) for k, s in shapes.items() if k.startswith(UNET) and k.endswith(".weight")}
    if RAD_CONV not in unet or len(unet[RAD_CONV]) != 4:
        raise SystemExit(f"no {UNET}{RAD_CONV}.weight: not an SD1.x/SD2.x checkpoint")
    res_blocks = num_res_blocks(list(k + ".weight" for k in unet))
    targets = [(kohya_unet_name(RAD_CONV, res_blocks), UNET + RAD_CONV + ".weight", unet[RAD_CONV])]
    found = sorted((m for m in unet if LINEAR.search(m) and len(unet[m]) == 2), key=_execution_order)
    targets += [(kohya_unet_name(m, res_blocks), UNET + m + ".weight", unet[m]) for m in found[:linears]]
    if te_linears:
        te = {k[len(TE):-len(".weight")]: tuple(s) for k, s in shapes.items() if k.startswith(TE) and k.endswith(".weight")}
        found = sorted((m for m in te if TE_LINEAR.match(m)), key=lambda m: (int(TE_LINEAR.match(m).group(1)), m))
        if not found:
            print("no SD1 CLIP text encoder found: --te-linears ignored", file=sys.stderr)
        targets += [("lora_te_text_model_" + m.replace(".", "_"), TE + m + ".weight", te[m]) for m in found[:te_linears]]
    if any(name is None for name, _, _ in targets):
        raise SystemExit(f"cannot name {[key for name, key, _ in targets if name is None]} in kohya's layout")
    return targets


def build_lora(shapes: Dict[str, Sequence[int]], *, rank: int = 4, linears: int = 8, te_linears: int = 0,
               strength: float = 0.2, seed: int = 1, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """The LoRA's tensors for a checkpoint with these {key: shape}: kohya names, seeded, non-zero up weights."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, _, shape in lora_targets(shapes, linears, te_linears):
        fan_in = math.prod(shape[1:])
        kernel = tuple(shape[2:])
        down = torch.randn(rank, *shape[1:], generator=g) / math.sqrt(fan_in)
        up = torch.randn(shape[0], rank, *(1 for _ in kernel), generator=g) * (strength / math.sqrt(rank))
        out[f"{name}.lora_down.weight"] = down.to(dtype).contiguous()
        out[f"{name}.lora_up.weight"] = up.to(dtype).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(rank)).to(dtype)
    return out


def merged_weight(weight: torch.Tensor, lora: Dict[str, torch.Tensor], name: str, multiplier: float = 1.0) -> torch.Tensor:
    """``weight`` with the LoRA ``name`` merged as every host does: W + multiplier * alpha / rank * up @ down."""
    up, down = lora[f"{name}.lora_up.weight"].float(), lora[f"{name}.lora_down.weight"].float()
    rank = down.shape[0]
    scale = float(lora[f"{name}.alpha"]) / rank if f"{name}.alpha" in lora else 1.0
    delta = (up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)).reshape(weight.shape)
    return (weight.float() + multiplier * scale * delta).to(weight.dtype)


def checkpoint_shapes(path: str) -> Dict[str, tuple]:
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = state.get("state_dict", state)
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="SD1.x checkpoint (.safetensors or .ckpt), read for names and shapes only")
    parser.add_argument("output", help="the LoRA to write (.safetensors)")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--linears", type=int, default=8, help="U-Net attention/ff linears covered besides the RAD conv")
    parser.add_argument("--te-linears", type=int, default=4, help="text-encoder linears covered (SD1 CLIP)")
    parser.add_argument("--strength", type=float, default=0.2, help="std of each covered layer's change for unit inputs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    args = parser.parse_args(argv)
    if args.rank < 1 or args.linears < 0 or args.te_linears < 0:
        parser.error("--rank must be >= 1, --linears and --te-linears >= 0")

    from safetensors.torch import save_file

    shapes = checkpoint_shapes(args.checkpoint)
    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    tensors = build_lora(shapes, rank=args.rank, linears=args.linears, te_linears=args.te_linears,
                         strength=args.strength, seed=args.seed, dtype=dtype)
    stem = os.path.splitext(os.path.basename(args.output))[0]
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(args.rank), "ss_network_alpha": str(args.rank),
                "ss_base_model_version": "sd_v1", "ss_output_name": stem, "modelspec.architecture": "stable-diffusion-v1/lora",
                "hidiffusion_random_lora": f"seed={args.seed} strength={args.strength}"}
    save_file(tensors, args.output, metadata=metadata)
    names = [k[:-len(".alpha")] for k in tensors if k.endswith(".alpha")]
    print(f"{args.output}: {len(names)} layers ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}), rank {args.rank}")
    print(f"sha256 {sha256(args.output)}")


if __name__ == "__main__":
    main()
