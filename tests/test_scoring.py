import numpy as np

from dream3d.export.mesh import to_gltf_frame
from dream3d.shapes.meshes import shape_mesh
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
        assert abs(s["iou_scale"] - 1.1) < 0.05
