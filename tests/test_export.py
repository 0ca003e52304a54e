"""Export: density -> mesh (auto iso level, floaters, colours), +Y-up files, turntable videos."""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh

from dream3d.errors import UserError
from dream3d.export import ExportConfig, export_asset
from dream3d.export.mesh import write_mesh
from dream3d.export.turntable import render_turntable, write_turntable
from dream3d.geometry.base import Geometry
from dream3d.geometry.hashgrid import HashGridConfig
from dream3d.geometry.isosurface import auto_threshold, density_grid, extract_mesh
from dream3d.geometry.nerf import NeRFConfig, NeRFGeometry


class EllipsoidField(Geometry):
    """Soft ellipsoid with semi-axes (0.3, 0.3, 0.6) along world x, y, z (so its long axis is +Z,
    world up), red on top (z > 0) and blue below; optional small far-away floater."""

    def __init__(self, sharpness=200.0, peak=50.0, floater=False):
        super().__init__()
        self.bound, self.sharpness, self.peak, self.floater = 1.0, sharpness, peak, floater
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def density(self, x):
        r = (x / torch.tensor([0.3, 0.3, 0.6])).norm(dim=-1)
        s = self.peak * torch.sigmoid(self.sharpness * (1.0 - r))
        if self.floater:
            s = s + self.peak * torch.sigmoid(40.0 * (1.0 - (x - torch.tensor([0.8, 0.8, 0.8])).norm(dim=-1) / 0.06))
        return s

    def forward(self, x, normals=None):
        top = (x[:, 2:3] > 0).float()
        albedo = top * torch.tensor([0.9, 0.1, 0.1]) + (1 - top) * torch.tensor([0.1, 0.1, 0.9])
        return {"sigma": self.density(x), "albedo": albedo}

    def density_grid(self, resolution=128, chunk=65536):
        return density_grid(self.density, self.bound, resolution, chunk)

    def export_mesh(self, resolution=128, threshold="auto", keep_fraction=0.1, fill_cavities=False):
        return extract_mesh(self, resolution, threshold, keep_fraction, fill_cavities=fill_cavities)


def test_auto_threshold_matches_rendered_silhouette():
    field = EllipsoidField()
    grid = field.density_grid(64)
    level = auto_threshold(grid, 1.0)
    assert 0 < level < 50
    mesh, info = extract_mesh(field, 64, grid=grid)
    ext = np.ptp(mesh.vertices, axis=0)
    np.testing.assert_allclose(ext, [0.6, 0.6, 1.2], atol=0.06)
    # the rule: the solid {sigma > level} covers exactly the rays that render more than half opaque,
    # whatever the density scale (a 1000x denser field renders, and so meshes, slightly larger)
    for g in (grid, grid * 1000):
        lv = auto_threshold(g, 1.0)
        for axis in range(3):
            opacity = 1 - torch.exp(-g.sum(axis) * 2.0 / 63)
            agree = ((g.amax(axis) > lv) == (opacity > 0.5)).float().mean()
            assert agree > 0.995
    with pytest.raises(UserError, match="empty"):
        auto_threshold(torch.zeros(16, 16, 16), 1.0)


def test_floaters_removed_and_colours_kept():
    mesh, info = extract_mesh(EllipsoidField(floater=True), 64, keep_fraction=0.1)
    assert info["components_total"] == 2 and info["components_kept"] == 1
    assert np.abs(mesh.vertices).max() < 0.7  # the floater at (0.8, 0.8, 0.8) is gone
    rgb = np.asarray(mesh.visual.vertex_colors)[:, :3]
    top = mesh.vertices[:, 2] > 0.05
    assert (rgb[top, 0] > 200).all() and (rgb[~top & (mesh.vertices[:, 2] < -0.05), 2] > 200).all()
    assert mesh.volume > 0  # outward-facing triangles
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.3 * 0.3 * 0.6, rel=0.15)


class HazyShellField(EllipsoidField):
    """A red ball (radius 0.5, dense) in a thin white haze (radius 0.52 to 0.56, density 3): seen
    head-on the haze lets most of the red through, but grazing rays through it render more than
    half opaque, so the render-matched iso surface lies at the haze's outer edge."""

    def density(self, x):
        r = x.norm(dim=-1)
        return 100.0 * torch.sigmoid(200.0 * (0.5 - r)) + 3.0 * torch.sigmoid(200.0 * (0.56 - r))

    def forward(self, x, normals=None):
        hazy = (x.norm(dim=-1, keepdim=True) > 0.52).float()  # where the ball's density has faded
        albedo = hazy * torch.tensor([1.0, 1.0, 1.0]) + (1 - hazy) * torch.tensor([0.9, 0.1, 0.1])
        return {"sigma": self.density(x), "albedo": albedo}


def test_vertex_colours_are_what_the_renders_show():
    field = HazyShellField()
    mesh, info = extract_mesh(field, 64)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert radius.min() > 0.52  # the iso surface lies in the white haze ...
    rgb = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(int)
    assert (rgb[:, 0] > 200).all() and (rgb[:, 1] < 80).all()  # ... but head-on the renders are red
    assert info["colour_depth"] == pytest.approx(3 * 2.0 / 63)
    at_vertex, _ = extract_mesh(field, 64, colour_depth=0)  # the albedo at the vertex: white
    assert (np.asarray(at_vertex.visual.vertex_colors)[:, 1] > 200).all()


def test_export_round_trip_is_y_up_with_colours(tmp_path):
    cfg = ExportConfig(resolution=48, turntable_frames=5, turntable_size=31, fps=5)
    summary = export_asset(EllipsoidField(), tmp_path, cfg)
    for name in ("mesh.glb", "mesh.obj", "mesh.ply", "turntable.mp4", "turntable.gif", "export.json"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    glb = trimesh.load(tmp_path / "mesh.glb", force="mesh")
    ext = np.ptp(glb.vertices, axis=0)
    np.testing.assert_allclose(ext, [0.6, 1.2, 0.6], atol=0.08)  # world Z (long axis) is glTF +Y
    colors = np.asarray(glb.visual.vertex_colors)
    assert colors.shape == (len(glb.vertices), 4)
    up = glb.vertices[:, 1] > 0.05  # world top (red) is glTF +Y
    assert (colors[up, 0] > 200).all() and (colors[up, 2] < 60).all()
    ply = trimesh.load(tmp_path / "mesh.ply", force="mesh")
    np.testing.assert_allclose(np.ptp(ply.vertices, axis=0), ext, atol=1e-4)
    obj_lines = (tmp_path / "mesh.obj").read_text().splitlines()
    assert len([ln for ln in obj_lines if ln.startswith("v ")][0].split()) == 7  # v x y z r g b
    # world (x, y, z) -> (x, z, -y): a vertex's glTF z is minus its world y
    assert summary["extent_world_xyz"][2] == pytest.approx(ext[1], abs=1e-4)
    # turntable: 5 frames, even size (31 -> 32), readable back
    gif = imageio.mimread(tmp_path / "turntable.gif")
    assert len(gif) == 5 and gif[0].shape[:2] == (32, 32)
    with imageio.get_reader(tmp_path / "turntable.mp4") as r:
        assert r.count_frames() == 5 and r.get_data(0).shape == (32, 32, 3)
    assert summary["turntable_frames"] == 5 and summary["components_kept"] == 1


def test_turntable_frames_show_the_object_and_validate(tmp_path):
    mesh, _ = extract_mesh(EllipsoidField(), 32)
    frames = render_turntable(mesh, n=4, size=24)
    assert frames.shape == (4, 24, 24, 3) and frames.dtype == np.uint8
    centre, corner = frames[:, 12, 12].astype(int), frames[:, 0, 0].astype(int)
    assert (corner == 255).all() and (centre.sum(-1) < 600).all()  # object in the middle, white around
    with pytest.raises(UserError):
        write_turntable(frames.astype(np.float32), tmp_path)
    with pytest.raises(UserError):
        write_mesh(mesh, tmp_path, formats=("stl",))


def test_export_of_a_nerf_field_with_field_turntable(tmp_path):
    field = NeRFGeometry(NeRFConfig(encoding=HashGridConfig.from_max_resolution(64, levels=4, log2_table_size=12)))
    cfg = ExportConfig(resolution=32, turntable_frames=2, turntable_size=16, turntable_source="field")
    summary = export_asset(field, tmp_path, cfg)
    # the initial blob: a ball of radius ~0.5 around the origin
    assert 0.7 < max(summary["extent_world_xyz"]) < 1.3
    assert (tmp_path / "turntable.gif").is_file()


def test_turntable_formats_choose_the_files(tmp_path):
    cfg = ExportConfig(resolution=24, turntable_frames=2, turntable_size=16, turntable_formats=("gif",))
    summary = export_asset(EllipsoidField(), tmp_path / "gif", cfg)
    assert set(summary["files"]) >= {"glb", "gif"} and "mp4" not in summary["files"]
    assert not (tmp_path / "gif" / "turntable.mp4").exists()
    none = export_asset(EllipsoidField(), tmp_path / "none", ExportConfig(resolution=24, turntable_formats=()))
    assert none["turntable_frames"] == 0 and not list((tmp_path / "none").glob("turntable.*"))
    assert (tmp_path / "none" / "mesh.ply").is_file()
    with pytest.raises(UserError, match="webm"):
        ExportConfig(turntable_formats=("webm",))
