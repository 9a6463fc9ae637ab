"""Small stand-ins for the webui's own ``modules.*`` (A1111 1.10.1 signatures).

Only what the HiDiffusion script touches. Everything else in the tests is real: the script, the
extension package and the ldm U-Net.
"""
