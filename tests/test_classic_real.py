"""HiDiffusion on the real code of Forge Classic (needs CLASSIC_DIR; skipped otherwise).

Tested at Haoming02/sd-webui-forge-classic 1f95d717 (classic branch): ldm_patched's U-Net, modules_forge's UnetPatcher
and forge_sampler. The cases of tests/fork_cases.py run on a small U-Net the fork builds with its own classes, through
its own patcher, loader and sampling path; tests/fork_backend.py imports the fork's code.
"""

from fork_backend import gated_fork
from fork_cases import *  # noqa: F403 - the shared cases run here against this fork

pytestmark, host = gated_fork("CLASSIC_DIR")
