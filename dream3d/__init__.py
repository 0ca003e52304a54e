"""dream3d: 3D-aware generation on a 2D diffusion prior.

The Python API mirrors the command line: ``dream3d.txt2img(...)`` is ``dream3d txt2img``, ``dream3d.img2mesh(...)``
is ``dream3d img2mesh``.
Heavy modules (torch, diffusers) load on first use, so ``import dream3d`` stays fast.
"""

import importlib

__version__ = "0.1.0"

_API = {
    "txt2img": ("dream3d.text_to_image", "txt2img"),
    "txt2mesh": ("dream3d.text_to_3d", "txt2mesh"),
    "img2mesh": ("dream3d.image_to_3d", "img2mesh"),
    "LatentDiffusion": ("dream3d.diffusion.core", "LatentDiffusion"),
    "load_config": ("dream3d.config", "load_config"),
    "UserError": ("dream3d.errors", "UserError"),
}


# Lazy API: a name's module (torch, diffusers) loads on first access, which keeps `import dream3d` fast.
def __getattr__(name):
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'dream3d' has no attribute '{name}'")


__all__ = list(_API) + ["__version__"]
