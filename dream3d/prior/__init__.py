"""The bundled shapes-world prior: its training data, training, and evaluation.

The prior itself is an ordinary Stable Diffusion model in diffusers layout, shipped in
``dream3d/priors/shapes`` and loaded like any other model (``--model shapes``, the default).
"""
