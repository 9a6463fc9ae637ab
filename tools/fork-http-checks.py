"""HTTP checks of the HiDiffusion extension on a running webui (docs/forks.md). Usage: fork-http-checks.py URL [controlnet-model]
Runs, as a client would send them: baseline off, on (named), on (positional), 422, off again (baseline restored), all at
640x640, 3 steps, Euler, seed 1; then, if a ControlNet model name is given, one request with the built-in ControlNet."""
import base64
import hashlib
import io
import json
import sys
import time
import urllib.request

url = sys.argv[1].rstrip("/")
cn_model = sys.argv[2] if len(sys.argv) > 2 else None
base = {"prompt": "a photo of a cat", "negative_prompt": "", "width": 640, "height": 640, "steps": 3, "seed": 1,
        "sampler_name": "Euler", "cfg_scale": 7, "batch_size": 1, "n_iter": 1}
POSITIONAL = [True, True, True, "Auto", "", "", "auto", "auto", "bicubic"]


def post(name, extra):
    body = dict(base, **extra)
    t = time.time()
    req = urllib.request.Request(url + "/sdapi/v1/txt2img", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        r = urllib.request.urlopen(req, timeout=3000)
        data = json.loads(r.read())
    except urllib.error.HTTPError as e:
        print(f"{name}: HTTP {e.code} {time.time() - t:.1f}s {e.read()[:400].decode(errors='replace')}", flush=True)
        return None
    img = base64.b64decode(data["images"][0])
    sha = hashlib.sha256(img).hexdigest()[:12]
    info = json.loads(data["info"]).get("infotexts", [""])[0].replace("\n", " | ")
    hd = "; ".join(p.strip() for p in info.split(",") if "HiDiffusion" in p or "ControlNet" in p)
    print(f"{name}: HTTP {r.status} {time.time() - t:.1f}s sha256[:12] {sha} | {hd}", flush=True)
    return sha


off1 = post("off (baseline)", {})
named = post("on, named", {"alwayson_scripts": {"HiDiffusion": {"args": [{"enabled": True}]}}})
positional = post("on, positional", {"alwayson_scripts": {"HiDiffusion": {"args": POSITIONAL}}})
post("bad field (expect 422)", {"alwayson_scripts": {"HiDiffusion": {"args": [{"enabled": True, "t1": 1.5}]}}})
off2 = post("off again", {})
print("named == positional:", named == positional, "| on != off:", named != off1, "| baseline restored:", off1 == off2)
if cn_model:
    from PIL import Image, ImageDraw
    hint = Image.new("RGB", (640, 640), "black")
    ImageDraw.Draw(hint).ellipse((160, 160, 480, 480), outline="white", width=8)
    buf = io.BytesIO()
    hint.save(buf, format="PNG")
    unit = {"enabled": True, "module": "None", "model": cn_model, "weight": 1.0,
            "image": base64.b64encode(buf.getvalue()).decode(), "resize_mode": "Just Resize", "control_mode": "Balanced"}
    post("controlnet off", {"alwayson_scripts": {"ControlNet": {"args": [unit]}}})
    post("controlnet + on", {"alwayson_scripts": {"ControlNet": {"args": [unit]},
                                                 "HiDiffusion": {"args": [{"enabled": True}]}}})
