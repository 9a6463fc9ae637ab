"""ui-check.py's checks of what the readout knows besides the tab's fields, of the schedule strip, and the README's
screenshots. A mixin of UiCheck: it uses its page helpers (find, readout, type_number, shot, ...).

Settings are changed through the webui's own API (``POST /sdapi/v1/options``, so start it with ``--api``) and
restored; the page is never touched for them, so a passing check also shows the readout's refresh after a change
the page did not make.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
import time
import urllib.request
import zlib
from typing import Optional

from selenium.webdriver.common.by import By

STRIP = "#script_{tab}_hidiffusion_strip"


def tiny_png(path: str, width: int, height: int) -> str:
    """A grey RGB PNG of the given size, written with the standard library (the image img2img resizes by)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height))
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                   + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path


class ReadoutChecks:
    # ---- helpers ---------------------------------------------------------------------------------------------

    def options(self, values: Optional[dict] = None) -> dict:
        """GET or POST the webui's Settings through its API."""
        data = json.dumps(values).encode() if values is not None else None
        request = urllib.request.Request(self.url + "sdapi/v1/options", data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read() or b"{}")

    def api_txt2img(self) -> None:
        """One tiny generation through the API (loads the selected checkpoint where the host waits for one)."""
        body = json.dumps({"prompt": "a", "width": 256, "height": 256, "steps": 1}).encode()
        request = urllib.request.Request(self.url + "sdapi/v1/txt2img", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.gen_timeout) as answer:
            answer.read()

    def strip_cells(self, tab: str) -> list:
        """Per pass row: (label text, [cell kinds]) as the page shows them."""
        return self.js(
            "return Array.from(document.querySelectorAll(arguments[0] + ' .hidiffusion-strip-pass')).map(row => ["
            "row.querySelector('.hidiffusion-strip-label').textContent, "
            "Array.from(row.querySelectorAll('.hidiffusion-strip-cells .hidiffusion-strip-cell'))"
            ".map(c => c.className.replace(/.*hidiffusion-strip-/, ''))])", STRIP.format(tab=tab))

    def element_shot(self, css: str, path: str) -> None:
        element = self.find(css)
        self.js("arguments[0].scrollIntoView({block: 'center'})", element)
        time.sleep(0.5)
        element.screenshot(path)
        print(f"       screenshot: {path}", flush=True)

    def readout_until(self, tab: str, done, timeout: float = 30) -> str:
        """The readout once ``done(text)`` holds (the page state is polled each second), or as it is at the timeout."""
        try:
            return self.wait(lambda: (lambda t: t if done(t) else None)(self.readout(tab, settle=0.5)), timeout,
                             "the readout")
        except Exception:
            return self.readout(tab)

    def header_line(self, tab: str) -> str:
        return self.readout(tab).split("\n")[0]

    # ---- the checks ------------------------------------------------------------------------------------------

    def schedule_strip(self, readme_dir: Optional[str] = None, host: str = "a1111") -> None:
        """1024x1024 at 10 steps (SD1.5 small: RAD steps 0-3), then hires 2x at 10 steps (large: RAD 0-6, pooled
        0-2): a cell per step, marked as the schedule runs, in the light and the dark theme."""
        self.tick("txt2img")
        self.type_number("txt2img_width", "1024")
        self.type_number("txt2img_height", "1024")
        self.type_number("txt2img_steps", "10")
        self.readout("txt2img")
        rows = self.strip_cells("txt2img")
        first = rows[0][1] if rows else []
        self.check("txt2img: the strip has 10 cells for 10 steps, RAD on steps 0-3, stock after, MSW-MSA on",
                   first == ["rad"] * 4 + ["stock"] * 6 and "MSW-MSA on" in rows[0][0], str(rows))
        self.click_header("txt2img_hr")
        self.type_number("txt2img_hr_scale", "2")
        self.type_number("txt2img_hires_steps", "10")
        text = self.readout("txt2img")
        rows = self.strip_cells("txt2img")
        hires = rows[1][1] if len(rows) > 1 else []
        self.check("txt2img: hires 2x adds a second row: RAD + pooled on steps 0-2, RAD 3-6, stock 7-9",
                   hires == ["both"] * 3 + ["rad"] * 4 + ["stock"] * 3 and "hires pass 2048x2048" in text, str(rows))
        light = os.path.join(self.out, f"strip-{host}-light.png")
        self.element_shot(STRIP.format(tab="txt2img"), light)
        colours = self.js("const c = document.querySelector(arguments[0] + ' .hidiffusion-strip-rad');"
                          "return c && getComputedStyle(c).backgroundColor", STRIP.format(tab="txt2img"))
        self.check("txt2img: a RAD cell is drawn in the strip's orange", colours == "rgb(232, 131, 58)", str(colours))
        if readme_dir:
            os.makedirs(readme_dir, exist_ok=True)
            self.element_shot("#script_txt2img_hidiffusion_enabled", os.path.join(readme_dir, f"accordion-{host}.png"))
        self.driver.get(self.url + "?__theme=dark")
        self.wait(lambda: self.js("return !!document.querySelector('#txt2img_generate')"), 180, "the dark UI")
        time.sleep(2)
        self.tick("txt2img")
        self.type_number("txt2img_width", "1024")
        self.type_number("txt2img_height", "1024")
        self.type_number("txt2img_steps", "10")
        self.click_header("txt2img_hr")
        self.type_number("txt2img_hires_steps", "10")
        self.readout("txt2img")
        dark = os.path.join(self.out, f"strip-{host}-dark.png")
        self.element_shot(STRIP.format(tab="txt2img"), dark)
        seen = self.js("const s = document.querySelector(arguments[0] + ' .hidiffusion-strip-stock');"
                       "const b = document.body; return [document.body.classList.contains('dark') || "
                       "document.documentElement.classList.contains('dark'), getComputedStyle(s).borderTopColor, "
                       "getComputedStyle(document.querySelector(arguments[0] + ' .hidiffusion-strip-label')).color]",
                       STRIP.format(tab="txt2img"))
        self.check("dark theme: the strip's stock cells have a visible border and its text the theme's colour",
                   bool(seen) and seen[0] and seen[1] not in ("rgba(0, 0, 0, 0)", "rgb(0, 0, 0)")
                   and seen[2] != "rgb(0, 0, 0)", str(seen))
        self.open_page()

    def resize_by(self) -> None:
        """img2img: a 640x480 image, Resize by 1.5: the readout says 960x720 (A1111) / 960x720 (Forge rounds to 8)."""
        self.tick("img2img")
        image = tiny_png(os.path.join(tempfile.mkdtemp(prefix="ui-check-"), "source.png"), 640, 480)
        upload = self.wait(lambda: next(iter(self.driver.find_elements(By.CSS_SELECTOR, "#img2img_image input[type=file]")),
                                        None), 20, "the img2img image input")
        upload.send_keys(image)
        time.sleep(3)
        self.click_tab("#img2img_tabs_resize", "Resize by")
        self.type_number("img2img_scale", "1.5")
        self.type_number("img2img_steps", "20")
        self.type_number("img2img_denoising_strength", "1")
        text = self.readout_until("img2img", lambda t: "first pass 960x720, 20 steps" in t)
        self.check("img2img: a 640x480 image, Resize by 1.5: the readout says first pass 960x720 (Resize by)",
                   "first pass 960x720, 20 steps" in text and "Resize by" in text, text)
        self.shot("img2img-resize-by")
        self.click_tab("#img2img_tabs_resize", "Resize to")
        text = self.readout_until("img2img", lambda t: "Resize by" not in t)
        self.check("img2img: back on Resize to: the readout follows Width/Height again",
                   "first pass 960x720" not in text and "Resize by" not in text, text)
        self.main_tab("txt2img")

    def model_switch(self, other: str) -> None:
        """Another checkpoint through the API: the readout names it within seconds, with no event on the page."""
        if not other:
            self.check("model switch: skipped (no --other-checkpoint given)", True)
            return
        self.tick("txt2img")
        before = self.header_line("txt2img")
        current = self.options().get("sd_model_checkpoint", "")
        try:
            self.options({"sd_model_checkpoint": other})
            stem = re.sub(r"\.(safetensors|ckpt)(\s*\[.*\])?$", "", other)
            named = lambda: (lambda t: t if stem in t and t != before else None)(self.header_line("txt2img"))  # noqa: E731
            how = "no page event"
            try:
                after = self.wait(named, 60, f"the readout to name {stem}")
            except Exception:  # Forge loads a switched checkpoint at the next generation: one small one over the API
                self.api_txt2img()
                how = "after one API generation loaded it (Forge loads at Generate), no page event"
                after = self.wait(named, 240, f"the readout to name {stem}")
            self.check(f"model switch to {other}: the readout's first line names it, {how}", stem in after,
                       f"{before!r} -> {after!r}")
            self.shot("model-switched")
        except Exception as error:  # CheckFailed (timeout) or the API
            self.check(f"model switch to {other}: the readout names it", False, f"{before!r}: {error}")
        finally:
            if current:
                self.options({"sd_model_checkpoint": current})

    def settings_tools(self) -> None:
        """HyperTile (A1111) or Token merging (Forge) switched on through the API: the readout names the tool."""
        options = self.options()
        key, value, wanted = (("hypertile_enable_unet", True, "MSW-MSA left to HyperTile (Settings)")
                              if "hypertile_enable_unet" in options else
                              ("token_merging_ratio", 0.5, "MSW-MSA left to Token merging (ratio 0.5, Settings)"))
        before = options.get(key)
        self.tick("txt2img")
        self.type_number("txt2img_width", "1024")
        self.type_number("txt2img_height", "1024")
        self.readout("txt2img")
        try:
            self.options({key: value})
            try:
                text = self.wait(lambda: (lambda t: t if wanted in t else None)(self.readout("txt2img", settle=1)),
                                 30, wanted)
            except Exception:
                text = self.readout("txt2img")
            self.check(f"Settings {key} = {value} through the API: the readout says '{wanted}'", wanted in text, text)
            self.shot("settings-tool")
        finally:
            self.options({key: before})
        text = self.wait(lambda: (lambda t: t if wanted not in t else None)(self.readout("txt2img", settle=1)), 30,
                         "the tool gone")
        self.check(f"Settings {key} back to {before}: the readout says MSW-MSA on", "MSW-MSA on" in text, text)

    def deep_shrink_accordion(self) -> None:
        """Forge's Kohya HRFix Integrated (an InputAccordion): ticked, the readout leaves RAU-Net to it."""
        header = self.js("return Array.from(document.querySelectorAll('#tab_txt2img .input-accordion'))"
                         ".map(a => a.id).find(id => document.querySelector('#' + id + ' .label-wrap')"
                         ".textContent.includes('Kohya HRFix'))")
        if not header:
            self.check("Deep Shrink accordion: none on this webui (Forge's Kohya HRFix Integrated), skipped", True)
            return
        self.tick("txt2img")
        self.type_number("txt2img_width", "1024")
        self.type_number("txt2img_height", "1024")
        self.click_header(header)
        text = self.readout("txt2img")
        self.check("txt2img: Kohya HRFix ticked: the readout says RAU-Net left to Kohya HRFix (Deep Shrink)",
                   "RAU-Net left to Kohya HRFix (Deep Shrink)" in text, text)
        rows = self.strip_cells("txt2img")
        self.check("txt2img: ... and the strip shows no RAD step", bool(rows) and "rad" not in rows[0][1], str(rows))
        self.shot("deep-shrink")
        self.click_header(header)
        text = self.readout("txt2img")
        self.check("txt2img: Kohya HRFix unticked: RAU-Net is back", "Kohya HRFix" not in text, text)
