"""The web app (``dream3d app``): text to image, text to 3D and stereo pairs in a browser.

:mod:`dream3d.app.jobs` holds the jobs, their checks and the runner (no Gradio);
:mod:`dream3d.app.page` the Gradio page (imported on use: Gradio takes seconds to load).
"""

from .jobs import AppSettings

__all__ = ["AppSettings"]
