"""The browser check (tools/ui-check.py) against a running webui: WEBUI_URL=http://127.0.0.1:7860.

Skips without WEBUI_URL, selenium, or Debian's chromium and chromium-driver. The webui must run with its UI
(not --nowebui) and a checkpoint; it generates one small image and restores the one Settings default it changes.
"""

import os
import shutil
import subprocess
import sys

import pytest

URL = os.environ.get("WEBUI_URL")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.skipif(not URL, reason="set WEBUI_URL to a running A1111 or Forge UI"),
    pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                       reason="needs Debian's chromium and chromium-driver"),
]


def test_the_ui_in_a_real_browser(tmp_path):
    pytest.importorskip("selenium")
    out = os.environ.get("UI_CHECK_OUT") or str(tmp_path)
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "ui-check.py"), "--url", URL, "--out", out],
                         capture_output=True, text=True, timeout=3600)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "[FAIL]" not in run.stdout and "[PASS] txt2img: typed 768 into Width and Height" in run.stdout
