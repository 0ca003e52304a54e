import numpy as np
import pytest

from dream3d.export.mesh import to_gltf_frame
from dream3d.shapes.meshes import shape_mesh
from dream3d.shapes.metrics import saturation
from dream3d.shapes.objects import COLOURS
from dream3d.shapes.scoring import load_asset, score_asset


def test_true_objects_score_perfectly_after_an_export_round_trip(tmp_path):
    for shape, colour in (("cube", "red"), ("cone", "blue")):
        mesh = shape_mesh(shape).copy()
        mesh.apply_transform(np.diag([1.1, 1.1, 1.1, 1.0]))  # a scaled copy: the scale search must find it
        rgb = (np.asarray(COLOURS[colour]) * 255).round().astype(np.uint8)
        mesh.visual.vertex_colors = np.tile(np.append(rgb, 255), (len(mesh.vertices), 1))
        to_gltf_frame(mesh).export(tmp_path / f"{shape}.ply")
        s = score_asset(load_asset(tmp_path / f"{shape}.ply"), f"a {colour} {shape}", res=64)
        assert s["iou"] > 0.9 and s["shape_right"] and s["colour_right"], s
        assert s["colour_error"] < 0.01
        assert abs(s["saturation_error"]) < 0.01
        assert abs(s["iou_scale"] - 1.1) < 0.05


def test_saturation_error_tells_over_saturated_from_washed_out_surfaces(tmp_path):
    red = np.asarray(COLOURS["red"])
    for name, rgb, sign in (("vivid", (0.9, 0.0, 0.0), 1), ("washed", red * 0.5 + 0.25, -1)):
        mesh = shape_mesh("sphere").copy()
        mesh.visual.vertex_colors = np.tile(
            np.append(np.round(np.asarray(rgb) * 255), 255).astype(np.uint8), (len(mesh.vertices), 1)
        )
        to_gltf_frame(mesh).export(tmp_path / f"{name}.ply")
        s = score_asset(load_asset(tmp_path / f"{name}.ply"), "a red sphere", res=32)
        assert np.sign(s["saturation_error"]) == sign, (name, s["saturation"])
        assert s["saturation"] == pytest.approx(saturation(np.round(np.asarray(rgb) * 255) / 255), abs=1e-6)
