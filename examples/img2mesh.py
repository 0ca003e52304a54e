"""Image to 3D from Python, the same as `dream3d img2mesh`: a shapes-world render in, a mesh out.

python examples/img2mesh.py                      # the bundled shapes-view prior, on the CPU (~1 min)
python examples/img2mesh.py --model DIR          # another Zero-1-to-3 model (still the shapes recipe)
"""

import argparse
from pathlib import Path

import dream3d
from dream3d.cameras import Camera
from dream3d.image_to_3d import default_config_path
from dream3d.io import save_image
from dream3d.shapes import ShapeObject, to_uint8
from dream3d.shapes.photo import object_rgba

p = argparse.ArgumentParser()
p.add_argument("-o", "--output", default="outputs/example-img2mesh")
p.add_argument("--model", default=None)
p.add_argument("--steps", type=int, default=150)
args = p.parse_args()

# The input: an RGBA render of a blue cylinder seen from 15 degrees up (any RGBA PNG, or an object
# on a plain background, will do).
image = Path(args.output) / "input.png"
save_image(image, to_uint8(object_rgba(ShapeObject("cylinder", "blue"), Camera(15.0, 35.0, 1.8, 50.0, 128, 128))))

metrics = dream3d.img2mesh(
    image,
    f"{args.output}/run",
    config=default_config_path(None),  # the shapes recipe, whichever prior
    model=args.model,
    steps=args.steps,
    reference={"elevation_deg": 15.0},  # the input camera's elevation (--elevation 15)
    export={"turntable_formats": ["gif"]},
)
print(f"{metrics['steps']} steps in {metrics['seconds']} s: {args.output}/run/mesh.glb, turntable.gif")
