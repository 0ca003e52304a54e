"""The web app's page (``dream3d app``): the Gradio layout and its handlers.

Tabs: text to image (a gallery), text to 3D (live progress, the newest validation image, the mesh
in a 3D viewer, the turntable, downloads; cancel and resume) and stereo pairs. Every model job
(all three tabs) goes through one queue slot (``concurrency_id="jobs"``, limit 1), so long jobs run
one at a time and a waiting user sees their place in the queue; the quick handlers (checks,
cancel) bypass it. Bad input is a :class:`~dream3d.errors.UserError`, shown in the page as its
one line (:func:`shown_in_page`), checked before the job joins the queue where it can be.
The jobs themselves live in :mod:`dream3d.app.jobs`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..diffusion.schedulers import SCHEDULERS
from ..errors import UserError
from ..trainer import Interrupted
from . import jobs
from .jobs import AppSettings, JobBoard

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local app
try:
    import gradio as gr
except ImportError:  # pragma: no cover - gradio is a dependency; a broken install says so here
    raise UserError(
        "the web app needs gradio; install the project again (make install, or pip install gradio)"
    ) from None

JOBS = {"concurrency_id": "jobs", "concurrency_limit": 1}  # one model job at a time, across tabs
QUICK = {"concurrency_limit": None, "show_progress": "hidden"}
SCHEDULER_DEFAULT = "the model's own"


@contextlib.contextmanager
def shown_in_page() -> Iterator[None]:
    """A UserError becomes a message in the page (its one line, no traceback)."""
    try:
        yield
    except UserError as e:
        raise gr.Error(str(e), print_exception=False) from None


def build_app(settings: AppSettings) -> gr.Blocks:
    """The page for ``settings`` (not launched; :func:`launch` serves it)."""
    board = JobBoard()
    with gr.Blocks(title="dream3d", analytics_enabled=False) as app:
        gr.Markdown(
            f"# dream3d\nModel: **{settings.model or 'the bundled shapes prior'}**. "
            f"Every run writes its files under `{settings.output_dir}`."
        )
        with gr.Tab("Text to 3D", id="txt2mesh"):
            _txt2mesh_tab(settings, board)
        with gr.Tab("Text to image", id="txt2img"):
            _txt2img_tab(settings)
        with gr.Tab("Stereo pairs", id="stereo"):
            _stereo_tab(settings)
    return app


def launch(settings: AppSettings, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the page at ``http://host:port`` until interrupted."""
    app = build_app(settings)
    app.queue(default_concurrency_limit=1)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            allowed_paths=[str(Path(settings.output_dir).resolve())],
            ssr_mode=False,
            share=False,
            footer_links=[],
        )
    except OSError as e:
        raise UserError(f"cannot serve on {host}:{port} ({e}); pass another --port") from None


# ------------------------------------------------------------------------------------ text to 3D
def _txt2mesh_tab(settings: AppSettings, board: JobBoard) -> None:
    choices = jobs.presets(settings.model)
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", value="a red cube", elem_id="txt2mesh-prompt")
            preset = gr.Dropdown(choices, value=choices[0] if choices else None, label="Config preset")
            with gr.Row():
                seed = gr.Number(0, precision=0, label="Seed")
                steps = gr.Number(1000, precision=0, label="Steps", elem_id="txt2mesh-steps")
            with gr.Accordion("Config overrides", open=False, elem_id="txt2mesh-overrides-box"):
                overrides = gr.Textbox(
                    label="key=value overrides (as on the command line)",
                    placeholder="guidance.t_max_end=0.4 export.resolution=128",
                    elem_id="txt2mesh-overrides",
                )
            with gr.Row():
                start = gr.Button("Generate", variant="primary", elem_id="txt2mesh-run")
                cancel = gr.Button("Cancel", variant="stop", elem_id="txt2mesh-cancel")
                resume = gr.Button("Resume", elem_id="txt2mesh-resume")
            status = gr.Markdown(elem_id="txt2mesh-status")
            val_image = gr.Image(
                label="Latest validation image (RGB | normals | opacity)", interactive=False, height=240
            )
        with gr.Column(scale=1):
            model3d = gr.Model3D(label="Mesh", elem_id="txt2mesh-model", height=360)
            video = gr.Video(label="Turntable", interactive=False, height=300)
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="txt2mesh-files")
    token = gr.State(None)  # this session's current job
    stopped = gr.State(None)  # the folder of this session's last cancelled run
    result = gr.State(None)  # the folder of the run just ended, to show

    def announce(prompt, preset, seed, steps, overrides):
        with shown_in_page():
            jobs.txt2mesh_config(settings, prompt, preset, seed, steps, overrides)
        return board.announce(), "waiting for its turn...", None, None, None

    def announce_resume(folder):
        if not folder:
            raise gr.Error("there is no cancelled run in this session to resume", print_exception=False)
        return board.announce(), f"resuming `{folder}`...", None, None, None

    def run(token, prompt, preset, seed, steps, overrides, progress=gr.Progress()):
        with shown_in_page():
            cfg = jobs.txt2mesh_config(settings, prompt, preset, seed, steps, overrides)
            run_dir = jobs.new_run_dir(settings.output_dir, "txt2mesh", cfg.prompt)
            yield from _follow(board, token, jobs.txt2mesh_job(cfg, run_dir), run_dir, progress)

    def run_resume(token, folder, progress=gr.Progress()):
        with shown_in_page():
            cfg = jobs.resumable_config(folder)
            yield from _follow(board, token, jobs.txt2mesh_job(cfg, Path(folder), resume=True), Path(folder), progress)

    def stop(token):
        return "cancelling after this step..." if board.cancel(token) else gr.skip()

    def show(folder):
        if not folder:
            return gr.skip(), gr.skip(), gr.skip()
        files = jobs.txt2mesh_files(folder)
        return _str(files["glb"]), _str(files["video"]), [str(p) for p in files["downloads"]] or None

    # the result goes to the viewer from a plain handler after the job's generator: a Model3D that
    # a generator fills stays blank (Gradio 6)
    cleared = [token, status, model3d, video, downloads]
    outputs = [status, val_image, stopped, result]
    inputs = [prompt, preset, seed, steps, overrides]
    start.click(announce, inputs, cleared, **QUICK).success(run, [token, *inputs], outputs, **JOBS).then(
        show, result, [model3d, video, downloads], **QUICK
    )
    resume.click(announce_resume, stopped, cleared, **QUICK).success(
        run_resume, [token, stopped], outputs, **JOBS
    ).then(show, result, [model3d, video, downloads], **QUICK)
    cancel.click(stop, token, status, **QUICK)


def _follow(board: JobBoard, token: str, body, run_dir: Path, progress) -> Iterator[tuple]:
    """Run ``body`` as ``token``'s job; yield the page's outputs as it goes and when it ends."""
    keep = gr.skip()
    job = board.start(token, body)
    if job is None:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # a new run's folder, still empty
        yield "cancelled before it started", keep, keep, None
        return
    try:
        yield f"running in `{run_dir}`", None, keep, None
        for info in job.updates():
            loss = f", loss {info['loss']:.4g}" if isinstance(info.get("loss"), float) else ""
            text = f"{info.get('stage', '')} step {info['step']} of {info['total']}{loss}".strip()
            progress((info["step"], info["total"]), desc=text)
            image = str(info["val_image"]) if info.get("val_image") else keep
            yield text, image, keep, None
        try:
            metrics = job.result()
            stopped, text = None, f"done: {metrics['steps']} steps in {metrics['seconds']:.0f} s, files in `{run_dir}`"
        except Interrupted as e:
            stopped, text = (
                str(run_dir),
                f"cancelled ({e}); the checkpoint is in `{run_dir}`: press Resume to finish it",
            )
        yield text, _str(jobs.txt2mesh_files(run_dir)["val_image"]), stopped, str(run_dir)
    finally:
        job.cancel()  # the page went away (or the job ended): stop at the next step
        board.finish(token)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


# ---------------------------------------------------------------------------------- text to image
def _txt2img_tab(settings: AppSettings) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", value="a red cube, side view")
            negative = gr.Textbox(label="Negative prompt")
            with gr.Row():
                steps = gr.Number(30, precision=0, label="Steps")
                guidance = gr.Number(7.5, label="Guidance scale")
                rescale = gr.Number(0.7, minimum=0, maximum=1, label="Guidance rescale")
            with gr.Row():
                scheduler = gr.Dropdown([SCHEDULER_DEFAULT, *SCHEDULERS], value=SCHEDULER_DEFAULT, label="Scheduler")
                seed = gr.Number(0, precision=0, label="Seed")
                count = gr.Slider(1, 8, value=4, step=1, label="Images")
            start = gr.Button("Generate", variant="primary")
            status = gr.Markdown()
        gallery = gr.Gallery(label="Images", columns=4, scale=1)

    def config(prompt, negative, steps, guidance, rescale, scheduler, seed, count):
        return jobs.txt2img_config(
            settings,
            prompt=prompt,
            negative=negative or None,
            steps=jobs.number(steps, "steps"),
            guidance=jobs.number(guidance, "guidance", whole=False),
            guidance_rescale=jobs.number(rescale, "guidance rescale", whole=False),
            scheduler=None if scheduler == SCHEDULER_DEFAULT else scheduler,
            seed=jobs.number(seed, "seed"),
            num_images=jobs.number(count, "the number of images"),
        )

    def check(*values):
        with shown_in_page():
            config(*values)

    def run(*values):
        with shown_in_page():
            cfg = config(*values)
            run_dir = jobs.new_run_dir(settings.output_dir, "txt2img", cfg.prompt)
            images = jobs.txt2img_job(cfg, run_dir)
        return [str(p) for p in images], f"{len(images)} image(s) in `{run_dir}`"

    inputs = [prompt, negative, steps, guidance, rescale, scheduler, seed, count]
    start.click(check, inputs, None, **QUICK).success(run, inputs, [gallery, status], **JOBS)


# ---------------------------------------------------------------------------------- stereo pairs
def _stereo_tab(settings: AppSettings) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Radio(["shapes scene", "my photo"], value="shapes scene", label="Input")
            scene = gr.Number(0, precision=0, label="Shapes scene (seed)")
            photo = gr.Image(label="Photo (left view)", type="filepath", sources=["upload"], visible=False)
            depth = gr.File(
                label="Depth map (.npy, .pfm or 16-bit .png)", file_types=[".npy", ".pfm", ".png"], visible=False
            )
            kind = gr.Radio(
                ["inverse", "depth"], value="inverse", label="The map holds (MiDaS/DPT: inverse depth)", visible=False
            )
            with gr.Row():
                seed = gr.Number(0, precision=0, label="Seed")
                max_disparity = gr.Number(192, minimum=1, label="Maximum disparity (px)")
            start = gr.Button("Make the pair", variant="primary")
            status = gr.Markdown()
        with gr.Column(scale=2):
            with gr.Row():
                left = gr.Image(label="Left", interactive=False)
                right = gr.Image(label="Right", interactive=False)
            with gr.Row():
                disparity = gr.Image(label="Disparity (near: bright)", interactive=False)
                files = gr.File(label="The data set (pairs/ as a zip)", interactive=False)

    def request(source, scene, photo, depth, kind, seed, max_disparity):
        shapes = source == "shapes scene"
        return jobs.StereoRequest(photo, depth, kind, scene if shapes else None, seed, max_disparity)

    def check(*values):
        with shown_in_page():
            request(*values).options()

    def run(*values):
        with shown_in_page():
            job = request(*values)
            name = "photo" if job.scene_seed is None else f"scene-{job.scene_seed}"
            run_dir = jobs.new_run_dir(settings.output_dir, "stereo", name)
            pair = job.run(run_dir)
        archive = shutil.make_archive(str(run_dir / "pairs"), "zip", run_dir / "pairs")  # the data set in one file
        return str(pair["left"]), str(pair["right"]), str(pair["preview"]), archive, f"pair in `{run_dir}`"

    def pick(source):
        shapes = source == "shapes scene"
        return gr.update(visible=shapes), *[gr.update(visible=not shapes)] * 3

    source.change(pick, source, [scene, photo, depth, kind], **QUICK)
    inputs = [source, scene, photo, depth, kind, seed, max_disparity]
    start.click(check, inputs, None, **QUICK).success(run, inputs, [left, right, disparity, files, status], **JOBS)
