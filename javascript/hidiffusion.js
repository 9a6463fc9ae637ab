// Tooltips for the HiDiffusion controls. A1111's hints.js reads the global `titles` map by label text.
(function() {
    var hints = {
        "HiDiffusion": "Generate above the model's trained resolution without duplicated subjects (RAU-Net + MSW-MSA, arXiv 2311.17528).",
        "RAU-Net": "Resolution-aware U-Net: the deep blocks run at the trained size for the first part of the steps (dilated downsample, block pooling).",
        "MSW-MSA": "Top-level self-attention in 4 shifted windows: faster at large sizes. Switch it off first if odd sizes look worse.",
        "HiDiffusion preset": "Auto reads the family from the U-Net. Choose SDXL Turbo for Turbo checkpoints whose name lacks 'turbo'.",
        "HiDiffusion T1 (empty = auto)": "Fraction of the steps for RAU-Net's main phase (SD1/SD2: dilated downsample; SDXL: pooling). Empty = reference default.",
        "HiDiffusion T2 (empty = auto)": "Fraction of the steps for the second phase (SD1/SD2: pooling; SDXL: dilated downsample when not aggressive).",
        "SDXL aggressive phase": "SDXL below 4096 px: dilated downsample for the first 16% of steps, then pooling until T1. Auto: off for inpainting and Playground.",
        "Apply to": "auto: MSW-MSA on every pass, RAU-Net only on passes above 1.5x the native area (so only the hires pass with Hires. fix).",
        "MSW-MSA at odd sizes": "bicubic: resize odd grids to even as the reference does; global: keep plain attention at that level."
    };
    if (typeof titles === "undefined") {
        window.titles = {};
    }
    for (var label in hints) {
        titles[label] = hints[label];
    }
})();
