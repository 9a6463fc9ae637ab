"""For tests and the benchmark only; nothing at run time imports this package.

- models: random-weight ldm U-Nets in SD1/SD2/SDXL shapes and their diffusers twins.
- parity: step-by-step comparison with the reference package (hidiffusion 0.1.10).
- attention: A1111-style class-level attention swaps (SDP).
- bench: the benchmark (python -m hidiffusion_ext.devtools.bench).
"""
