"""HiDiffusion on the real code of reForge (needs REFORGE_DIR; skipped otherwise).

Tested at Panchovix/stable-diffusion-webui-reForge main 3b56b268 (ldm_patched's U-Net without block modifiers,
ControlNet objects that never call the model function wrapper) and newmain_newforge 65cb271e (Forge main's backend).
The cases of tests/fork_cases.py run on a small U-Net the fork builds with its own classes, through its own patcher,
loader and sampling path; tests/fork_backend.py imports the fork's code (the layout is recognised by what it has).
"""

from fork_backend import gated_fork
from fork_cases import *  # noqa: F403 - the shared cases run here against this fork

pytestmark, host = gated_fork("REFORGE_DIR")
