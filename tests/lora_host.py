"""The webuis' own LoRA extensions, loaded from checkouts for tests/test_lora_real.py.

- A1111 (extensions-builtin/Lora): networks.py, network.py, network_*.py, lora_patches.py, lyco_helpers.py as the webui
  imports them (the extension folder on sys.path, modules by bare name), with lora_patches.LoraPatches() installed as
  scripts/lora_script.py:27 does (it replaces torch.nn.Conv2d.forward, Linear.forward, ... for the whole process; undone
  when the context ends), and modules/patches.py itself from the checkout.
- Forge main (extensions-builtin/sd_forge_lora), Forge Classic (extensions-builtin/Lora) and the other Forge-lineage
  trees: their networks.py + network.py, whose load_networks() puts the LoRA on shared.sd_model.forge_objects.unet
  through the host's own load_lora_for_models / add_patches (must run inside fork_backend.fork_host, which imports the
  host's backend or ldm_patched).

Only the webui's own ``modules.*`` that these files import are stood in for (``webui_modules``), each by what the
extension uses of it; gradio (not installed here) only for the import (networks.py reads gr.Warning on a missing LoRA).
Everything loaded is taken out of sys.modules afterwards and what was there before is put back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
from types import SimpleNamespace

import torch

CPU = torch.device("cpu")
EXTENSION_MODULES = ("networks", "network", "lora", "lora_patches", "lora_logger", "lyco_helpers", "extra_networks_lora")


def _owned(name: str) -> bool:
    root = name.split(".")[0]
    return root in ("modules", "gradio") or root in EXTENSION_MODULES or root.startswith("network_")


def walk_files(path, allowed_extensions=None):
    """modules/util.py:31-51 (A1111 1.10.1; shared.walk_files): files under ``path`` with these extensions, sorted."""
    if not os.path.exists(path):
        return
    for root, _, files in sorted(os.walk(path, followlinks=True)):
        for filename in sorted(files):
            if allowed_extensions is None or os.path.splitext(filename)[1].lower() in set(allowed_extensions):
                yield os.path.join(root, filename)


def read_metadata_from_safetensors(filename):
    """modules/sd_models.py:284-309: the file's __metadata__ dict."""
    from safetensors import safe_open

    with safe_open(filename, framework="pt") as f:
        return dict(f.metadata() or {})


def read_state_dict(checkpoint_file, print_global_state=False, map_location=None):
    """modules/sd_models.py:312-329 for a .safetensors LoRA on CPU: safetensors.torch.load_file (its
    get_state_dict_from_checkpoint renames only checkpoint keys, none of a LoRA's)."""
    import safetensors.torch

    return safetensors.torch.load_file(checkpoint_file, device="cpu")


def webui_modules(lora_dir: str, errors_seen: list, a1111_dir: str = "") -> dict:
    """Stand-ins for the ``modules.*`` the LoRA extensions import (A1111 1.10.1 files named per attribute):
    - shared: opts (the Lora options of scripts/lora_script.py:35-50, lora_functional the test's switch),
      cmd_opts.lora_dir / lyco_dir_backcompat / no_hashing (modules/cmd_args.py), walk_files, sd_model;
    - devices: cpu, device, dtype (fp32 here), cond_cast_unet (devices.py:132-135: identity unless fp16 is forced),
      torch_gc;
    - sd_models: read_state_dict, read_metadata_from_safetensors, and Forge's model_data.get_sd_model()
      (the loaded model, i.e. shared.sd_model);
    - errors: display / report (errors.py) record instead of printing, so a test sees a LoRA that failed to load;
    - cache.cached_data_for_file (cache.py:81): computes, no cache file; hashes (hashes.py:22-60): no cached hash,
      no hashing (cmd_opts.no_hashing);
    - sd_hijack.model_hijack: an empty embedding database (bundled embeddings only), comments;
    - scripts.scripts_txt2img (infotext_pasted only); textual_inversion.textual_inversion (bundled embeddings only);
    - models.sd3.mmdit.QkvLinear (models/sd3/mmdit.py:178, an nn.Linear subclass; SD3 only);
    - (Forge Classic, in ``forge_lora``) sd_vae_taesd.decoder / encoder (TAESD previews only);
    - patches: modules/patches.py of the A1111 checkout itself when ``a1111_dir`` is given.
    """
    made = {}

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        if name in ("modules", "modules.models", "modules.models.sd3", "modules.textual_inversion"):
            m.__path__ = []
        made[name] = m
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(made[parent], child, m)
        return m

    module("modules")
    opts = SimpleNamespace(lora_functional=False, lora_in_memory_limit=0, lora_not_found_warning_console=False,
                           lora_not_found_gradio_warning=False, lora_add_hashes_to_infotext=True,
                           lora_bundled_ti_to_infotext=True, lora_preferred_name="Alias from file", lora_show_all=False,
                           lora_hide_unknown_for_versions=[], sd_lora="None", list_hidden_files=True)
    cmd_opts = SimpleNamespace(lora_dir=lora_dir, lyco_dir_backcompat=os.path.join(lora_dir, "LyCORIS"), no_hashing=True)
    shared = module("modules.shared", opts=opts, cmd_opts=cmd_opts, walk_files=walk_files, sd_model=None)
    module("modules.devices", cpu=CPU, device=CPU, dtype=torch.float32, dtype_unet=torch.float32,
           cond_cast_unet=lambda x: x, torch_gc=lambda: None)
    module("modules.sd_models", read_state_dict=read_state_dict, read_metadata_from_safetensors=read_metadata_from_safetensors,
           model_data=SimpleNamespace(get_sd_model=lambda: shared.sd_model))
    module("modules.errors", display=lambda e, task, **kw: errors_seen.append(f"{task}: {e!r}"),
           report=lambda message, **kw: errors_seen.append(message))
    module("modules.cache", cached_data_for_file=lambda subsection, title, filename, func: func())
    module("modules.hashes", sha256_from_cache=lambda filename, title, use_addnet_hash=False: None,
           sha256=lambda filename, title, use_addnet_hash=False: None)
    embedding_db = SimpleNamespace(word_embeddings={}, expected_shape=-1, skipped_embeddings={},
                                   register_embedding=lambda *a: None, register_embedding_by_name=lambda *a: None)
    module("modules.sd_hijack", model_hijack=SimpleNamespace(embedding_db=embedding_db, comments=[]))
    module("modules.scripts", scripts_txt2img=SimpleNamespace(infotext_fields=[]))
    module("modules.textual_inversion")

    def create_embedding_from_data(*args, **kwargs):
        raise NotImplementedError("bundled embeddings are not part of these tests")

    module("modules.textual_inversion.textual_inversion", create_embedding_from_data=create_embedding_from_data)
    module("modules.models")
    module("modules.models.sd3")
    module("modules.models.sd3.mmdit", QkvLinear=type("QkvLinear", (torch.nn.Linear,), {}))
    if a1111_dir:
        spec = importlib.util.spec_from_file_location("modules.patches", os.path.join(a1111_dir, "modules", "patches.py"))
        patches = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(patches)
        made["modules.patches"] = made["modules"].patches = patches
    return made


@contextlib.contextmanager
def _extension(ext_dir: str, stand_ins: dict):
    saved = {name: m for name, m in sys.modules.items() if _owned(name)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(stand_ins)
    sys.modules.setdefault("gradio", types.SimpleNamespace(Warning=lambda message: None))
    sys.path.insert(0, ext_dir)
    try:
        yield
    finally:
        sys.path.remove(ext_dir)
        for name in [n for n in sys.modules if _owned(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


@contextlib.contextmanager
def a1111_lora(a1111_dir: str, lora_dir: str):
    """A1111's Lora extension: (networks module, modules.shared stand-in, errors list). ``shared.sd_model`` must be set
    and ``networks.assign_network_names_to_compvis_modules(shared.sd_model)`` called (its on_model_loaded callback)."""
    errors_seen = []
    stand_ins = webui_modules(lora_dir, errors_seen, a1111_dir)
    with _extension(os.path.join(a1111_dir, "extensions-builtin", "Lora"), stand_ins):
        import lora_patches
        import networks

        networks.originals = lora_patches.LoraPatches()  # scripts/lora_script.py:27
        try:
            yield networks, stand_ins["modules.shared"], errors_seen
        finally:
            networks.loaded_networks.clear()
            networks.originals.undo()  # scripts/lora_script.py:16 (on_script_unloaded)


def forge_lora_dir(fork_dir: str) -> str:
    """The LoRA extension folder of a Forge-lineage checkout: the one whose networks.py calls load_lora_for_models."""
    for name in ("sd_forge_lora", "Lora"):
        path = os.path.join(fork_dir, "extensions-builtin", name)
        try:
            with open(os.path.join(path, "networks.py"), encoding="utf-8") as f:
                if "load_lora_for_models" in f.read():
                    return path
        except OSError:
            continue
    return ""


class ForgeObjects:
    """backend/diffusion_engine/base.py:7-17 (Forge main): the model's patchers, and the shallow copy that
    processing.py:937 takes of forge_objects_original at each generation."""

    def __init__(self, unet, clip=None, vae=None, clipvision=None):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


@contextlib.contextmanager
def forge_lora(fork_dir: str, lora_dir: str):
    """A Forge-lineage LoRA extension: (networks module, modules.shared stand-in, errors list). Set
    ``shared.sd_model = forge_sd_model(patcher)`` before ``networks.load_networks``."""
    errors_seen = []
    stand_ins = webui_modules(lora_dir, errors_seen)
    for name in ("modules.shared", "modules.devices"):  # keep what fork_backend's own stand-ins carry
        base = sys.modules.get(name)
        for key, value in (vars(base).items() if base is not None else ()):
            if not key.startswith("__") and not hasattr(stand_ins[name], key):
                setattr(stand_ins[name], key, value)
    def taesd_unused(*args, **kwargs):
        raise NotImplementedError("TAESD previews are not part of these tests")

    # Classic's networks.py imports ldm_patched.modules.sd, whose ldm_patched/taesd/taesd.py:13 imports these two
    made = types.ModuleType("modules.sd_vae_taesd")
    made.decoder = made.encoder = taesd_unused
    stand_ins["modules.sd_vae_taesd"] = stand_ins["modules"].sd_vae_taesd = made
    from absent_packages import stand_ins as absent_stand_ins
    from fork_backend import ABSENT

    with _extension(forge_lora_dir(fork_dir), stand_ins):
        with absent_stand_ins(ABSENT):  # packages the host's LoRA import chain names but these tests never run
            import networks

        try:
            yield networks, stand_ins["modules.shared"], errors_seen
        finally:
            networks.loaded_networks.clear()


def forge_sd_model(unet_patcher):
    """The loaded model as the Forge-lineage LoRA extension reads it: forge_objects (reset from forge_objects_original
    at each generation) and current_lora_hash (backend/diffusion_engine/base.py:34: str([]))."""
    objects = ForgeObjects(unet_patcher)
    return SimpleNamespace(forge_objects=objects, forge_objects_original=objects.shallow_copy(),
                           forge_objects_after_applying_lora=objects.shallow_copy(), current_lora_hash=str([]))
