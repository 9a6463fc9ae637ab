#!/usr/bin/env python3
"""Drive a running A1111 or Forge UI in headless Chromium as a user would, and check the HiDiffusion controls.

Needs Debian's chromium and chromium-driver (``apt-get install chromium chromium-driver``), selenium from PyPI
(``pip install selenium``) and a webui started with its UI (not ``--nowebui``) and a checkpoint. Prints each check
with the readout text it saw, writes screenshots to --out, and exits 1 when a check failed:

    python tools/ui-check.py --url http://127.0.0.1:7860 --out /tmp/ui-shots

It generates one small image (--gen-size, --gen-steps) and changes one Settings -> HiDiffusion default, which it
restores before it ends. With ``--api`` on the webui it also switches HyperTile or Token merging and (with
--other-checkpoint) the checkpoint through the API, restoring both, to see the readout follow; --readme-shots DIR
writes the README's accordion screenshot (docs/images).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Callable, List, Optional

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from ui_readout_checks import ReadoutChecks

TOOLTIP = "Generate above the model's trained resolution"
AXES = ["[HiDiffusion] Enabled", "[HiDiffusion] RAU-Net", "[HiDiffusion] MSW-MSA", "[HiDiffusion] Preset",
        "[HiDiffusion] T1", "[HiDiffusion] T2", "[HiDiffusion] Aggressive", "[HiDiffusion] Apply to"]
SETTINGS_DEFAULTS = {"enabled": False, "raunet": True, "mswmsa": True, "preset": "Auto", "aggressive": "auto",
                     "apply_to": "auto", "odd_windows": "bicubic"}
NO_MODEL = "no model is loaded yet"


class CheckFailed(Exception):
    pass


class UiCheck(ReadoutChecks):
    def __init__(self, url: str, out: str, chromium: str, chromedriver: str, gen_size: int, gen_steps: int,
                 gen_timeout: float, readme_shots: str = "", other_checkpoint: str = "", host: str = "a1111"):
        self.url, self.out = url.rstrip("/") + "/", out
        self.readme_shots, self.other_checkpoint, self.host = readme_shots, other_checkpoint, host
        self.gen_size, self.gen_steps, self.gen_timeout = gen_size, gen_steps, gen_timeout
        self.results: List[tuple] = []
        self.shots = 0
        self.chromium, self.chromedriver, self.profiles = chromium, chromedriver, []
        self.driver = self.browser()

    def browser(self):
        """A fresh headless Chromium with its own profile (a second one is a second user)."""
        self.profiles.append(tempfile.mkdtemp(prefix="ui-check-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = self.chromium
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1600,2400", f"--user-data-dir={self.profiles[-1]}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=self.chromedriver), options=options)
        driver.set_script_timeout(30)
        return driver

    # ---- reporting -------------------------------------------------------------------------------------------

    def check(self, name: str, ok: bool, seen: str = "") -> bool:
        self.results.append((name, ok))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}" + (f"\n       seen: {seen!r}" if seen else ""), flush=True)
        return ok

    def shot(self, name: str) -> None:
        self.shots += 1
        path = os.path.join(self.out, f"{self.shots:02d}-{name}.png")
        self.driver.save_screenshot(path)
        print(f"       screenshot: {path}", flush=True)

    # ---- page helpers ----------------------------------------------------------------------------------------

    def open_page(self) -> None:
        self.driver.get(self.url)
        self.wait(lambda: self.js("return !!document.querySelector('#txt2img_generate') && "
                                  "!!document.querySelector('.input-accordion-checkbox')"), 180, "the UI to load")
        time.sleep(2)  # onUiLoaded scripts and the page-load events

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, condition: Callable[[], object], timeout: float, what: str):
        end = time.time() + timeout
        while True:
            try:
                value = condition()
                if value:
                    return value
            except WebDriverException:
                pass
            if time.time() > end:
                raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.25)

    def find(self, css: str, timeout: float = 20):
        return self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, css), timeout, css)

    def click_tab(self, container: str, label: str) -> None:
        """The tab button labelled ``label`` among ``container``'s own tabs (txt2img/img2img, Settings sections)."""
        def button():
            return self.wait(lambda: next((b for b in self.driver.find_elements(By.CSS_SELECTOR, f"{container} button")
                                           if b.text.strip() == label and b.is_displayed()), None), 20, f"tab {label}")

        for _ in range(3):  # a click right after typing into a number box may only blur it: click until selected
            button().click()
            time.sleep(0.5)
            selected = button()  # Gradio renders the tab buttons again on a change
            if "selected" in (selected.get_attribute("class") or "") or selected.get_attribute("aria-selected") == "true":
                return

    def main_tab(self, tab: str) -> None:
        """Gradio 4 (Forge) names the panel a button controls, and Forge labels them "Txt2img"; Gradio 3 does not."""
        button = self.driver.find_elements(By.CSS_SELECTOR, f'#tabs button[aria-controls="tab_{tab}"]')
        if button:
            button[0].click()
        else:
            self.click_tab("#tabs", {"settings": "Settings"}.get(tab, tab))
        self.wait(lambda: self.driver.find_element(By.ID, f"tab_{tab}").is_displayed(), 10, f"{tab} shown")

    def readout_id(self, tab: str) -> str:
        return f"script_{tab}_hidiffusion_resolved"

    def readout(self, tab: str, settle: float = 2.0, timeout: float = 30) -> str:
        """The readout text once it has not changed for ``settle`` seconds (a late answer would still show)."""
        element = self.find(f"#{self.readout_id(tab)}")
        last, since, end = None, time.time(), time.time() + timeout
        while time.time() < end:  # its paragraphs and list items, also while the accordion is closed
            text = self.js("return Array.from(arguments[0].querySelectorAll('p, li'))"
                           ".map(e => e.textContent.trim()).join('\\n')", element)
            if text != last:
                last, since = text, time.time()
            elif time.time() - since >= settle:
                break
            time.sleep(0.2)
        return last or ""

    def type_number(self, elem_id: str, text: str) -> None:
        """Select the number box's content and type ``text`` key by key, at the browser's own speed."""
        box = self.find(f"#{elem_id} input[type=number]")
        self.js("arguments[0].scrollIntoView({block: 'center'})", box)
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(text)

    def number(self, elem_id: str) -> float:
        return float(self.find(f"#{elem_id} input[type=number]").get_attribute("value"))

    def accordion(self, elem_id: str):
        return self.find(f"#{elem_id}")

    def accordion_state(self, elem_id: str):
        """(ticked, open) of an InputAccordion: its visible header checkbox, its label-wrap's open class."""
        box = self.find(f"#{elem_id}-visible-checkbox")
        wrap = self.find(f"#{elem_id} .label-wrap")
        return box.is_selected(), "open" in (wrap.get_attribute("class") or "")

    def click_header(self, elem_id: str) -> None:
        """Clicking the header opens the accordion, which ticks it (the webui links the two)."""
        wrap = self.find(f"#{elem_id} .label-wrap")
        self.js("arguments[0].scrollIntoView({block: 'center'})", wrap)
        wrap.click()
        time.sleep(0.5)

    def dropdown_choose(self, css: str, label: str) -> None:
        box = self.find(f"{css} input")
        self.js("arguments[0].scrollIntoView({block: 'center'})", box)
        box.click()
        option = self.wait(lambda: next((o for o in self.driver.find_elements(By.CSS_SELECTOR, f"{css} ul.options li")
                                         if o.text.strip() == label), None), 10, f"option {label}")
        option.click()
        time.sleep(0.5)

    def dropdown_options(self, elem_id: str) -> List[str]:
        box = self.find(f"#{elem_id} input")
        self.js("arguments[0].scrollIntoView({block: 'center'})", box)
        box.click()
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} ul.options li"), 10, "options")
        options = self.js(f"return Array.from(document.querySelectorAll('#{elem_id} ul.options li'))"
                          ".map(li => li.getAttribute('data-value') || li.textContent.replace(/^\\s*✓/, '').trim())")
        box.send_keys(Keys.ESCAPE)
        return options

    def first_pass(self, text: str) -> Optional[str]:
        found = re.search(r"first pass (\d+x\d+), (\d+) steps", text)
        return f"{found.group(1)}, {found.group(2)} steps" if found else None

    # ---- the checks ------------------------------------------------------------------------------------------

    def run(self) -> bool:
        try:
            self.open_page()
            self.accordion_defaults()
            self.tick("txt2img")
            if NO_MODEL in self.readout("txt2img"):  # Forge loads its model at the first Generate
                self.generate()
                self.open_page()
                self.tick("txt2img")
                self.readout_follows_the_tab()
            else:
                self.readout_follows_the_tab()
                self.generate()
                self.open_page()
            self.two_browsers()
            self.schedule_strip(self.readme_shots, self.host)
            self.settings_tools()
            self.deep_shrink_accordion()
            self.model_switch(self.other_checkpoint)
            self.open_page()
            self.img2img_denoising()
            self.resize_by()
            self.paste()
            self.xyz_axes()
            self.settings_defaults()
        except CheckFailed as error:
            self.check(f"check aborted: {error}", False)
            self.shot("aborted")
        except WebDriverException as error:
            self.check(f"browser error: {error.msg}", False)
            self.shot("browser-error")
        finally:
            self.driver.quit()
            for profile in self.profiles:
                shutil.rmtree(profile, ignore_errors=True)
        failed = [name for name, ok in self.results if not ok]
        print(f"\n{len(self.results) - len(failed)} of {len(self.results)} checks passed" +
              (": failed " + "; ".join(failed) if failed else ""))
        return not failed

    def accordion_defaults(self) -> None:
        for tab in ("txt2img", "img2img"):
            self.main_tab(tab)
            elem_id = f"script_{tab}_hidiffusion_enabled"
            ticked, opened = self.accordion_state(elem_id)
            self.check(f"{tab}: the HiDiffusion accordion is there, off and closed", not ticked and not opened,
                       f"ticked={ticked} open={opened}")
            title = self.find(f"#{elem_id} .label-wrap").get_attribute("title") or ""
            self.check(f"{tab}: the accordion header shows the tooltip", TOOLTIP in title, title)
            self.shot(f"{tab}-accordion-default")
        self.main_tab("txt2img")

    def tick(self, tab: str) -> None:
        self.main_tab(tab)
        elem_id = f"script_{tab}_hidiffusion_enabled"
        if not self.accordion_state(elem_id)[0]:
            self.click_header(elem_id)
        ticked, opened = self.accordion_state(elem_id)
        text = self.readout(tab)
        resolved = text.startswith("Resolved for") and "(HiDiffusion is off)" not in text
        self.check(f"{tab}: a click on the header ticks and opens it; the readout says it is on",
                   ticked and opened and (resolved or NO_MODEL in text), text)
        self.shot(f"{tab}-ticked")

    def expect(self, name: str, tab: str, wanted: str, absent: str = "") -> str:
        text = self.readout(tab)
        self.check(name, wanted in text and not (absent and absent in text), text)
        return text

    def readout_follows_the_tab(self) -> None:
        self.type_number("txt2img_width", "768")
        self.type_number("txt2img_height", "768")
        self.expect("txt2img: typed 768 into Width and Height: the readout says 768x768", "txt2img",
                    "first pass 768x768")
        self.type_number("txt2img_steps", "3")
        self.expect("txt2img: typed 3 into Steps: the readout says 3 steps", "txt2img", "first pass 768x768, 3 steps")
        self.shot("txt2img-typed-768")
        self.slider_moves("txt2img_width")
        self.hires()

    def slider_moves(self, elem_id: str) -> None:
        """Ten quick clicks along the slider, then a drag in ten moves: the readout follows the final value."""
        track = self.find(f"#{elem_id} input[type=range]")
        self.js("arguments[0].scrollIntoView({block: 'center'})", track)
        span = track.size["width"]
        actions = ActionChains(self.driver, duration=0)
        for i in range(10):
            actions.move_to_element_with_offset(track, int(span * (0.05 + 0.04 * i)) - span // 2, 0).click()
        actions.perform()
        width = int(self.number(elem_id))
        self.expect(f"txt2img: after ten quick slider clicks the readout follows Width {width}", "txt2img",
                    f"first pass {width // 8 * 8}x768")
        actions = ActionChains(self.driver, duration=0)
        actions.move_to_element_with_offset(track, -span // 4, 0).click_and_hold()
        for _ in range(10):
            actions.move_by_offset(span // 40, 0)
        actions.release().perform()
        width = int(self.number(elem_id))
        self.expect(f"txt2img: after a drag in ten moves the readout follows Width {width}", "txt2img",
                    f"first pass {width // 8 * 8}x768")
        self.shot("txt2img-slider-moves")
        self.type_number(elem_id, "768")

    def hires(self) -> None:
        self.click_header("txt2img_hr")
        self.type_number("txt2img_hr_scale", "1.5")
        self.expect("txt2img: Hires. fix on, Upscale by 1.5: the readout adds hires pass 1152x1152", "txt2img",
                    "hires pass 1152x1152")
        self.type_number("txt2img_hr_resize_x", "1024")
        self.type_number("txt2img_hr_resize_y", "1024")
        self.expect("txt2img: Resize width/height to 1024: the readout says hires pass 1024x1024", "txt2img",
                    "hires pass 1024x1024")
        self.shot("txt2img-hires")
        self.type_number("txt2img_hr_resize_x", "0")
        self.type_number("txt2img_hr_resize_y", "0")
        self.type_number("txt2img_hr_scale", "2")
        self.click_header("txt2img_hr")
        ticked, _ = self.accordion_state("txt2img_hr")
        text = self.readout("txt2img")
        self.check("txt2img: Hires. fix off again: no hires pass in the readout", not ticked and "hires pass" not in text,
                   text)

    def two_browsers(self) -> None:
        """A second user on the same webui types other sizes: each page keeps its own readout."""
        first, self.driver = self.driver, self.browser()
        second = self.driver
        try:
            self.open_page()
            self.tick("txt2img")
            self.type_number("txt2img_width", "1024")
            self.type_number("txt2img_height", "640")
            self.driver = first
            self.type_number("txt2img_width", "640")
            self.type_number("txt2img_height", "1024")
            mine = self.readout("txt2img")
            self.driver = second
            theirs = self.readout("txt2img")
            self.shot("second-browser")
        finally:
            self.driver = first
            second.quit()
        self.check("two browsers at once: each readout follows its own page (640x1024 here, 1024x640 there)",
                   "first pass 640x1024" in mine and "first pass 1024x640" in theirs, f"{mine!r} / {theirs!r}")
        self.type_number("txt2img_width", "768")
        self.type_number("txt2img_height", "768")

    def img2img_denoising(self) -> None:
        self.tick("img2img")
        self.type_number("img2img_steps", "20")
        self.type_number("img2img_denoising_strength", "0.5")
        self.expect("img2img: 20 steps at denoising 0.5: the readout says 11 steps", "img2img", "512x512, 11 steps")
        self.type_number("img2img_denoising_strength", "1")
        self.expect("img2img: denoising 1: the readout says 20 steps", "img2img", "512x512, 20 steps")
        self.shot("img2img-denoising")
        self.main_tab("txt2img")

    def generate(self) -> None:
        self.main_tab("txt2img")
        if not self.accordion_state("script_txt2img_hidiffusion_enabled")[0]:
            self.click_header("script_txt2img_hidiffusion_enabled")
        prompt = self.find("#txt2img_prompt textarea")
        prompt.click()
        prompt.send_keys(Keys.CONTROL, "a")
        prompt.send_keys("a red apple on a table")
        size = str(self.gen_size)
        self.type_number("txt2img_width", size)
        self.type_number("txt2img_height", size)
        self.type_number("txt2img_steps", str(self.gen_steps))
        before = self.readout("txt2img")
        self.find("#txt2img_generate").click()
        print(f"       generating {size}x{size}, {self.gen_steps} steps (readout before: {before!r})", flush=True)
        start = time.time()
        info = self.wait(lambda: (lambda t: t if "Steps:" in t else None)(self.find("#html_info_txt2img").text),
                         self.gen_timeout, "the generation's info text")
        self.check(f"txt2img: Generate ({time.time() - start:.0f} s): the info text says HiDiffusion: True",
                   "HiDiffusion: True" in info, info)
        self.shot("txt2img-generated")

    def paste(self) -> None:
        self.main_tab("txt2img")
        prompt = self.find("#txt2img_prompt textarea")
        for infotext, on in (("Steps: 20, Sampler: Euler, Size: 1024x1024, HiDiffusion: True, HiDiffusion T1: 0.5", True),
                             ("Steps: 20, Sampler: Euler, Size: 512x512", False)):
            prompt.click()
            prompt.send_keys(Keys.CONTROL, "a")
            prompt.send_keys(infotext)
            self.find("#tab_txt2img #paste").click()
            time.sleep(2)
            ticked, _ = self.accordion_state("script_txt2img_hidiffusion_enabled")
            t1 = self.find("#script_txt2img_hidiffusion_t1 textarea, #script_txt2img_hidiffusion_t1 input")
            t1 = t1.get_attribute("value")
            text = self.readout("txt2img")
            if on:
                self.check("txt2img: paste with HiDiffusion T1: 0.5 ticks the accordion and sets T1; readout says T1 0.5",
                           ticked and t1 == "0.5" and "T1 0.5" in text, f"ticked={ticked} T1={t1!r} readout={text!r}")
                self.shot("paste-on")
            else:
                self.check("txt2img: paste without the keys unticks it and empties T1",
                           not ticked and t1 == "" and "(HiDiffusion is off)" in text,
                           f"ticked={ticked} T1={t1!r} readout={text!r}")
        prompt.send_keys(Keys.CONTROL, "a")
        prompt.send_keys(Keys.DELETE)

    def xyz_axes(self) -> None:
        self.main_tab("txt2img")
        self.dropdown_choose("#tab_txt2img #script_list", "X/Y/Z plot")
        options = self.dropdown_options("script_txt2img_xyz_plot_x_type")
        ours = [o for o in options if o.startswith("[HiDiffusion]")]
        self.check("txt2img: the X/Y/Z plot's X type offers the HiDiffusion axes", all(a in options for a in AXES),
                   ", ".join(ours))
        self.shot("xyz-axes")
        self.dropdown_choose("#tab_txt2img #script_list", "None")

    def settings_values(self) -> dict:
        values = {}
        for name in SETTINGS_DEFAULTS:
            elem_id = f"setting_hidiffusion_default_{name}"
            self.find(f"#{elem_id}")
            if isinstance(SETTINGS_DEFAULTS[name], bool):
                values[name] = self.find(f"#{elem_id} input[type=checkbox]").is_selected()
            else:
                values[name] = self.js(f"const e = document.querySelector('#{elem_id} input[type=radio]:checked') || "
                                       f"document.querySelector('#{elem_id} input'); return e && e.value")
        return values

    def open_settings(self) -> None:
        self.main_tab("settings")
        self.click_tab("#settings", "HiDiffusion")

    def set_mswmsa_default(self, value: bool) -> str:
        box = self.find("#setting_hidiffusion_default_mswmsa input[type=checkbox]")
        if box.is_selected() != value:
            self.js("arguments[0].scrollIntoView({block: 'center'})", box)
            box.click()
        self.find("#settings_submit").click()
        return self.wait(lambda: self.find("#settings_result").text.strip(), 20, "the settings result")

    def settings_defaults(self) -> None:
        self.open_settings()
        values = self.settings_values()
        self.check("Settings -> HiDiffusion shows the defaults", values == SETTINGS_DEFAULTS, str(values))
        self.shot("settings-defaults")
        result = self.set_mswmsa_default(False)
        self.check("Settings: the MSW-MSA default unticked and applied", "1 settings changed" in result.lower() or
                   "settings changed" in result.lower(), result)
        try:
            self.open_page()
            box = self.find("#script_txt2img_hidiffusion_mswmsa input[type=checkbox]")
            self.tick("txt2img")
            text = self.readout("txt2img")
            self.check("a fresh page: MSW-MSA starts unticked and the readout says MSW-MSA off", not box.is_selected()
                       and "MSW-MSA off" in text, f"MSW-MSA ticked={box.is_selected()} readout={text!r}")
            self.shot("fresh-page-changed-default")
        finally:
            self.open_page()
            self.open_settings()
            result = self.set_mswmsa_default(True)
            self.open_page()
            self.open_settings()
            values = self.settings_values()
            self.check("Settings: the MSW-MSA default restored", values == SETTINGS_DEFAULTS, f"{result} / {values}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("WEBUI_URL", "http://127.0.0.1:7860"))
    parser.add_argument("--out", required=True, help="folder for the screenshots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    parser.add_argument("--gen-size", type=int, default=256, help="width and height of the one generated image")
    parser.add_argument("--gen-steps", type=int, default=2)
    parser.add_argument("--gen-timeout", type=float, default=900, help="seconds to wait for the image (CPU is slow)")
    parser.add_argument("--readme-shots", default="", help="folder for the README's accordion screenshot (docs/images)")
    parser.add_argument("--other-checkpoint", default="", help="a second checkpoint's title, for the model switch")
    parser.add_argument("--host", default="a1111", help="name used in the screenshot files (a1111, forge)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    check = UiCheck(args.url, args.out, args.chromium, args.chromedriver, args.gen_size, args.gen_steps,
                    args.gen_timeout, args.readme_shots, args.other_checkpoint, args.host)
    return 0 if check.run() else 1


if __name__ == "__main__":
    sys.exit(main())
