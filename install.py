"""Runs at every webui start: fast and idempotent. HiDiffusion needs only torch and einops, which both hosts ship."""

import importlib.util

if importlib.util.find_spec("einops") is None:
    import launch

    launch.run_pip("install einops", "einops for HiDiffusion")
