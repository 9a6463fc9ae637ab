import functools
import logging
import os
import sys
import warnings

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
warnings.filterwarnings("ignore", message=".*HiDiffusion Warning.*")  # the reference's odd-size notice


@functools.cache
def _pair(shape):
    from hidiffusion_ext.devtools.models import reference_pair

    return reference_pair(shape)


@pytest.fixture
def pair():
    """(ldm unet, diffusers twin, params) per shape, built once per session (patches are always removed)."""
    return _pair


@functools.cache
def _ldm(shape, in_channels=4):
    from hidiffusion_ext.devtools.models import build_ldm_unet, unet_params

    return build_ldm_unet(unet_params(shape, in_channels=in_channels), seed=1)


@pytest.fixture
def ldm_unet():
    return _ldm


def run_unet(unet, x, t=500.0, context=None, context_dim=None):
    with torch.no_grad():
        if context is None:
            context = torch.ones(x.shape[0], 3, context_dim or unet_context_dim(unet)) * 0.1
        return unet(x, torch.full((x.shape[0],), float(t)), context=context)


def unet_context_dim(unet):
    for m in unet.modules():
        if hasattr(m, "attn2"):
            return m.attn2.to_k.in_features
    raise AssertionError("no cross attention")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def hidiffusion_log():
    """Messages of the "hidiffusion" logger (it does not propagate once the webui session has set it up)."""
    logger, handler = logging.getLogger("hidiffusion"), _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def script_module():
    """scripts/hidiffusion.py loaded as the webui loads it (fake_webui), once per test module."""
    import fake_webui

    return fake_webui.load_script_module()


@pytest.fixture
def script(script_module):
    """A fresh HiDiffusion Script on the txt2img tab."""
    s = script_module.HiDiffusionScript()
    s.is_txt2img = True
    return s
