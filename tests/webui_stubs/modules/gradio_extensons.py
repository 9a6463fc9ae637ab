"""modules/gradio_extensons.py (A1111 1.10.1, lines 17-18 and 38-44; Forge's gradio_extensions.py does the same):
every gradio component takes a ``tooltip=`` keyword, kept as ``webui_tooltip`` and sent to the page in its config.

Only the tooltip part: the real module also forwards before/after_component to scripts, which the tests call directly.
A1111 imports it at start-up (modules/initialize.py:39), before any ui() runs; fake_webui does the same.
"""

import gradio as gr

_original_init = gr.components.IOComponent.__init__
_original_get_config = gr.blocks.Block.get_config


def IOComponent_init(self, *args, **kwargs):
    self.webui_tooltip = kwargs.pop("tooltip", None)
    return _original_init(self, *args, **kwargs)


def Block_get_config(self):
    config = _original_get_config(self)
    webui_tooltip = getattr(self, "webui_tooltip", None)
    if webui_tooltip:
        config["webui_tooltip"] = webui_tooltip
    return config


if not getattr(gr.components.IOComponent.__init__, "_webui_stub", False):
    IOComponent_init._webui_stub = True
    gr.components.IOComponent.__init__ = IOComponent_init
    gr.blocks.Block.get_config = Block_get_config
