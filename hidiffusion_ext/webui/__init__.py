"""The webui glue (A1111 and Forge alike): arguments in, one plan per sampling pass, a patch per pass, infotext out.

Host imports (``modules.*``, ``gradio``) happen only inside functions, so every module here imports outside a webui.
- fields: the one table of controls (name, type, default, label, tooltip, infotext key, X/Y/Z axis, settings option).
- arguments: parsing and validation of UI values, positional or named API arguments and X/Y/Z values (ScriptArgs).
- infotext: PNG info written from and pasted back into the controls.
- xyz_axes: X/Y/Z plot axes.
- step_tracking: the sampler step of a U-Net call, from the CFG denoiser.
- host_model: what is read off the webui's loaded model (U-Net, name, 768-v).
- controlnet_units: the active ControlNet units, read from the ControlNet extension's own state (A1111).
- pass_plan: the one decision per sampling pass (parts, steps, seed, family, resolved schedule), for patching and display.
- tab_preview: the passes a tab's values will run, and the resolved-schedule text and strip for them.
- readout: the live resolved-schedule line and strip under the controls, and what feeds them.
- schedule_strip: the strip's HTML, a cell per step of each pass.
- other_tools: the other U-Net tools the readout can see before Generate (Settings, other scripts' accordions).
- page_state: what only the page knows (img2img's resize tab) and the refresh counter it polls.
- conflicts: what HiDiffusion does next to each other U-Net tool in a pass.
- ui: the accordion, its controls and the Settings page.
- session: one generation: patch each pass, track its step, undo, report.
- script_hooks: what the Script's hooks do (scripts/hidiffusion.py stays glue only).
"""
