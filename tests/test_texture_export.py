"""Textured export: xatlas uvs, baking a colour field, seam padding, GLB / OBJ+MTL+PNG files, turntables from the file."""

import io
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from gltf_checks import accessor_data, check_glb, embedded_image, read_glb
from PIL import Image

from dream3d.errors import UserError
from dream3d.export import ExportConfig, export_asset, wants_texture
from dream3d.export.mesh import WORLD_TO_GLTF, load_mesh_world, write_mesh
from dream3d.export.texture import (
    bake_texture,
    dilate,
    rasterize_uv,
    sample_texture,
    texture_image,
    textured_mesh,
    unwrap,
)
from dream3d.export.turntable import render_turntable
from dream3d.geometry.dmtet import DMTetConfig, DMTetGeometry
from dream3d.geometry.hashgrid import HashGridConfig

SIZE = 256
TOL = 2.0 / 255.0


def ellipsoid(subdivisions=3):
    """World-frame ellipsoid, semi-axes (0.3, 0.3, 0.6): its long axis is world +Z (up)."""
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    return trimesh.Trimesh(mesh.vertices * np.array([0.3, 0.3, 0.6]), mesh.faces, process=False)


def position_colour(p):
    return (p + 1.0) / 2.0


def top_red_bottom_blue(p):
    top = (p[:, 2:3] > 0).float()
    return top * torch.tensor([0.9, 0.1, 0.1]) + (1 - top) * torch.tensor([0.1, 0.1, 0.9])


@pytest.fixture(scope="module")
def baked():
    """An ellipsoid textured with the position field at SIZE texels."""
    return textured_mesh(ellipsoid(), position_colour, SIZE, padding=4)


def test_unwrap_keeps_world_positions_and_faces():
    mesh = ellipsoid()
    split, uv = unwrap(mesh, SIZE, 4)
    vmap = split.metadata["uv_vmapping"]
    assert len(split.vertices) > len(mesh.vertices) and split.metadata["uv_charts"] >= 1  # seams cut
    np.testing.assert_array_equal(split.vertices, mesh.vertices[vmap])
    np.testing.assert_array_equal(vmap[split.faces], mesh.faces)  # same triangles, same order
    assert uv.shape == (len(split.vertices), 2) and uv.min() >= 0 and uv.max() <= 1
    assert uv.max() > 0.98  # the atlas's longer side spans the texture


def test_texel_centres_sample_exactly_and_row_zero_is_the_top():
    image = np.random.default_rng(0).random((4, 6, 3))
    i, j = np.meshgrid(np.arange(4), np.arange(6), indexing="ij")
    uv = np.stack([(j.ravel() + 0.5) / 6, 1.0 - (i.ravel() + 0.5) / 4], -1)  # OBJ-style: v up
    np.testing.assert_allclose(sample_texture(image, uv), image.reshape(-1, 3), atol=1e-12)
    # v = 1 is the top row, v = 0 the bottom row (clamped at the edges)
    np.testing.assert_allclose(sample_texture(image, [[0.0, 1.0], [1.0, 0.0]]), image[[0, -1], [0, -1]])


def test_constant_colour_bakes_to_that_colour_everywhere():
    mesh = ellipsoid(2)
    split, uv = unwrap(mesh, 128, 4)
    colour = torch.tensor([0.2, 0.6, 0.9])
    image = bake_texture(split, uv, lambda p: colour.expand(len(p), 3), 128, 4)
    assert image.shape == (128, 128, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, np.broadcast_to(colour.numpy(), image.shape), atol=1e-6)


def test_position_field_round_trips_at_the_vertices(baked):
    image = texture_image(baked)  # the PNG's 8-bit values
    expected = position_colour(np.asarray(baked.vertices))
    got = sample_texture(image, baked.visual.uv)
    assert np.abs(got - expected).max() < TOL
    # inside the charts the texels hold the field at their 3D points (up to 8-bit rounding)
    face, bary = rasterize_uv(baked.visual.uv, baked.faces, SIZE, SIZE)
    covered = face >= 0
    pts = (bary[covered][..., None] * baked.vertices[baked.faces[face[covered]]]).sum(1)
    assert np.abs(image[covered] - position_colour(pts)).max() <= 0.5 / 255 + 1e-5  # float32 points
    assert 0.3 < covered.mean() < 0.95


def test_seams_are_padded_with_chart_colours():
    mesh = ellipsoid(2)
    split, uv = unwrap(mesh, 128, 4)
    image = bake_texture(split, uv, position_colour, 128, padding=3).astype(np.float64)
    covered = rasterize_uv(uv, split.faces, 128, 128)[0] >= 0
    _, ring1 = dilate(np.zeros_like(image), covered, 1)
    ring1 &= ~covered
    _, padded = dilate(np.zeros_like(image), covered, 3)
    assert ring1.sum() > 100 and padded.sum() > ring1.sum() + covered.sum()
    # a texel just outside a chart holds the mean of its covered 8-neighbours
    for i, j in np.argwhere(ring1)[:200]:
        window = (slice(max(i - 1, 0), i + 2), slice(max(j - 1, 0), j + 2))
        np.testing.assert_allclose(image[i, j], image[window][covered[window]].mean(0), atol=1e-6)
    # beyond the padding: the mean colour of the charts
    np.testing.assert_allclose(image[~padded], np.broadcast_to(image[covered].mean(0), image[~padded].shape), atol=1e-6)
    # a zero padding leaves everything outside the charts at the mean colour
    flat = bake_texture(split, uv, position_colour, 128, padding=0)
    np.testing.assert_allclose(flat[~covered], np.broadcast_to(image[covered].mean(0), flat[~covered].shape), atol=1e-6)


def test_glb_round_trip_is_y_up_with_an_embedded_texture(baked, tmp_path):
    paths = write_mesh(baked, tmp_path)
    assert set(paths) == {"glb", "obj", "mtl", "png", "ply"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.glb", "mesh.mtl", "mesh.obj", "mesh.ply", "mesh.png"]
    assert check_glb(paths["glb"]) == []
    # what the file holds: +Y up, glTF texcoords (v flipped), the PNG, a diffuse PBR material
    gltf, binary = read_glb(paths["glb"])
    prim = gltf["meshes"][0]["primitives"][0]
    pos = accessor_data(gltf, binary, prim["attributes"]["POSITION"]).astype(np.float64)
    np.testing.assert_allclose(np.ptp(pos, axis=0), [0.6, 1.2, 0.6], atol=1e-3)  # world Z is glTF +Y
    np.testing.assert_allclose(pos, baked.vertices @ WORLD_TO_GLTF.T, atol=1e-6)
    texcoord = accessor_data(gltf, binary, prim["attributes"]["TEXCOORD_0"]).astype(np.float64)
    uv = np.asarray(baked.visual.uv)
    np.testing.assert_allclose(texcoord, np.stack([uv[:, 0], 1.0 - uv[:, 1]], -1), atol=1e-6)  # origin top-left
    png = Image.open(io.BytesIO(embedded_image(gltf, binary)))
    assert png.format == "PNG" and png.size == (SIZE, SIZE)
    np.testing.assert_array_equal(np.asarray(png.convert("RGB")), np.asarray(baked.visual.material.baseColorTexture))
    pbr = gltf["materials"][prim["material"]]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 1.0
    # trimesh reads it back: texture of the right size, colours at the vertices' uvs = the field
    scene = trimesh.load(paths["glb"])
    assert list(scene.geometry.values())[0].visual.material.baseColorTexture.size == (SIZE, SIZE)
    loaded = load_mesh_world(paths["glb"])
    np.testing.assert_allclose(loaded.vertices, baked.vertices, atol=1e-6)
    got = sample_texture(texture_image(loaded), loaded.visual.uv)
    assert np.abs(got - position_colour(np.asarray(loaded.vertices))).max() < TOL
    # trimesh's own texture lookup (nearest texel) agrees on the convention
    nearest = loaded.visual.to_color().vertex_colors[:, :3] / 255.0
    assert np.abs(nearest - position_colour(np.asarray(loaded.vertices))).max() < 3 / 255
    # smooth normals across the seams (those of the uncut surface), written as NORMAL
    np.testing.assert_allclose(loaded.vertex_normals, baked.vertex_normals, atol=1e-5)
    nrm = accessor_data(gltf, binary, prim["attributes"]["NORMAL"]).astype(np.float64)
    welded = ellipsoid().vertex_normals[baked.metadata["uv_vmapping"]]
    np.testing.assert_allclose(nrm, welded @ WORLD_TO_GLTF.T, atol=1e-5)


def test_obj_mtl_png_round_trip(baked, tmp_path):
    paths = write_mesh(baked, tmp_path, formats=("obj",))
    lines = paths["obj"].read_text().splitlines()
    assert "mtllib mesh.mtl" in lines and "usemtl baked" in lines
    assert "map_Kd mesh.png" in paths["mtl"].read_text().splitlines()
    assert Image.open(paths["png"]).size == (SIZE, SIZE)
    loaded = trimesh.load(paths["obj"], process=False)
    assert isinstance(loaded.visual, trimesh.visual.TextureVisuals)
    assert loaded.visual.material.image.size == (SIZE, SIZE)
    world = load_mesh_world(paths["obj"])
    np.testing.assert_allclose(np.ptp(loaded.vertices, axis=0), [0.6, 1.2, 0.6], atol=1e-3)  # +Y up
    got = sample_texture(texture_image(world), world.visual.uv)
    assert np.abs(got - position_colour(np.asarray(world.vertices))).max() < TOL
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ply_is_the_welded_surface_with_texture_colours(baked, tmp_path):
    paths = write_mesh(baked, tmp_path, formats=("ply",))
    ply = load_mesh_world(paths["ply"])
    assert len(ply.vertices) == len(ellipsoid().vertices) and len(ply.faces) == len(baked.faces)
    rgb = np.asarray(ply.visual.vertex_colors)[:, :3] / 255.0
    assert np.abs(rgb - position_colour(np.asarray(ply.vertices))).max() < TOL + 0.5 / 255
    assert ply.is_watertight


def test_turntable_from_the_loaded_file_shows_the_texture(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    mesh.visual.vertex_colors = np.array([0, 255, 0, 255], dtype=np.uint8)  # green: not what is shown
    paths = write_mesh(textured_mesh(mesh, top_red_bottom_blue, 128, 4), tmp_path, formats=("glb",))
    frames = render_turntable(load_mesh_world(paths["glb"]), n=3, size=32, elevation=0.0)
    top, bottom = frames[:, 9, 16].astype(int), frames[:, 23, 16].astype(int)
    assert (top[:, 0] > 2 * top[:, 2]).all() and (top[:, 0] > 100).all()  # red above ...
    assert (bottom[:, 2] > 2 * bottom[:, 0]).all() and (bottom[:, 2] > 100).all()  # ... blue below
    on_object = (frames != 255).any(-1)
    assert on_object.mean() > 0.3 and (frames[on_object][:, 1] < 60).all()  # the texture, not the green vertices
    assert (frames[:, 0, 0] == 255).all()  # white background


TINY_DMTET = DMTetConfig(
    grid_resolution=16, encoding=HashGridConfig.from_max_resolution(64, levels=4, log2_table_size=12), hidden_dim=16
)


def test_export_of_a_dmtet_writes_textured_files_and_a_turntable(tmp_path):
    torch.manual_seed(0)
    geometry = DMTetGeometry(TINY_DMTET)  # from scratch: |x| - 0.5, exactly 0 at some grid vertices
    with torch.no_grad():
        for p in geometry.encoding.parameters():
            p.uniform_(-1, 1)  # a texture that varies over the surface
    assert geometry.texture_field(torch.zeros(2, 3)).shape == (2, 3)  # the texture protocol
    cfg = ExportConfig(texture_size=256, texture_padding=2, turntable_frames=2, turntable_size=32, fps=2)
    summary = export_asset(geometry, tmp_path, cfg)
    names = [
        "export.json",
        "mesh.glb",
        "mesh.mtl",
        "mesh.obj",
        "mesh.ply",
        "mesh.png",
        "turntable.gif",
        "turntable.mp4",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # nothing else, no temporary files
    assert summary["textured"] is True and summary["turntable_frames"] == 2
    texture = summary["texture"]
    assert texture["size"] == 256 and texture["padding"] == 2 and texture["image"] == "mesh.png"
    assert texture["material"] == "mesh.mtl" and texture["uv_charts"] >= 1
    assert json.loads((tmp_path / "export.json").read_text())["texture"] == texture
    assert check_glb(tmp_path / "mesh.glb") == []
    loaded = load_mesh_world(tmp_path / "mesh.glb")
    assert loaded.visual.material.baseColorTexture.size == (256, 256)
    # marching tets made zero-area faces where the SDF is 0 at a grid vertex; xatlas charts them
    # nowhere, so their uv triangles are collapsed to a point (they cover no texel)
    zero = loaded.area_faces == 0
    uv_corners = loaded.visual.uv[loaded.faces[zero]]
    assert zero.any() and np.abs(uv_corners - uv_corners[:, :1]).max() == 0
    # the texture holds the field at every vertex of the visible surface
    used = np.unique(loaded.faces[~zero])
    with torch.no_grad():
        field = geometry.albedo(torch.as_tensor(loaded.vertices[used], dtype=torch.float32)).numpy()
    assert field.std(0).min() > 0.01
    err = np.abs(sample_texture(texture_image(loaded), loaded.visual.uv[used]) - field)
    assert err.max() < 6 / 255 and err.mean() < 1 / 255  # a hash grid of resolution 64 on 256 texels
    # "never" keeps the vertex-coloured files
    plain = export_asset(geometry, tmp_path / "plain", ExportConfig(textured="never", turntable_formats=()))
    assert plain["textured"] is False and plain["texture"] is None
    assert not (tmp_path / "plain" / "mesh.mtl").exists()
    obj_v = [ln for ln in (tmp_path / "plain" / "mesh.obj").read_text().splitlines() if ln.startswith("v ")]
    assert len(obj_v[0].split()) == 7  # v x y z r g b


def test_texture_settings_are_checked():
    class DensityOnly(torch.nn.Module):
        def density(self, x):
            return x.norm(dim=-1)

    assert not wants_texture(DensityOnly(), ExportConfig())
    assert wants_texture(DMTetGeometry(TINY_DMTET), ExportConfig())
    assert not wants_texture(DMTetGeometry(TINY_DMTET), ExportConfig(textured="never"))
    with pytest.raises(UserError, match="texture_field"):
        wants_texture(DensityOnly(), ExportConfig(textured="always"))
    with pytest.raises(UserError, match="textured"):
        ExportConfig(textured="yes")
    with pytest.raises(UserError, match="texture_size"):
        ExportConfig(texture_size=4)


def _rewrite_glb(path: Path, gltf: dict, binary: bytes) -> None:
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(binary), 0x004E4942) + binary
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)


def test_the_glb_checker_finds_broken_references(baked, tmp_path):
    path = write_mesh(baked, tmp_path, formats=("glb",))["glb"]
    gltf, binary = read_glb(path)
    prim = gltf["meshes"][0]["primitives"][0]
    gltf["textures"][0]["source"] = 7
    gltf["accessors"][prim["attributes"]["POSITION"]]["max"] = [9.0, 9.0, 9.0]
    gltf["images"][0]["mimeType"] = "image/gif"
    gltf["asset"]["version"] = "1.0"
    _rewrite_glb(tmp_path / "broken.glb", gltf, binary)
    problems = " | ".join(check_glb(tmp_path / "broken.glb"))
    for part in ("asset.version", "textures[0].source", "POSITION min/max", "mimeType"):
        assert part in problems
    (tmp_path / "short.glb").write_bytes(path.read_bytes()[:-4])
    assert check_glb(tmp_path / "short.glb")[0].startswith("container")


VALIDATOR = os.environ.get("DREAM3D_GLTF_VALIDATOR")  # a folder whose node_modules holds npm's gltf-validator


@pytest.mark.skipif(
    not VALIDATOR or shutil.which("node") is None, reason="set DREAM3D_GLTF_VALIDATOR to run Khronos's validator"
)
def test_khronos_validator_finds_no_errors_or_warnings(baked, tmp_path):
    path = write_mesh(baked, tmp_path, formats=("glb",))["glb"]
    script = (
        "const v = require('gltf-validator'); const data = new Uint8Array(require('fs').readFileSync(process.argv[1]));"
        "v.validateBytes(data).then(r => console.log(JSON.stringify(r.issues)));"
    )
    out = subprocess.run(
        ["node", "-e", script, str(path)], cwd=VALIDATOR, capture_output=True, text=True, check=True, timeout=60
    )
    issues = json.loads(out.stdout)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
