"""Neural fields for text-to-3D: hash-grid encoding, NeRF field, backgrounds, occupancy-grid
sampling, volume rendering and mesh/turntable export.

World frame: the project's (``/work/shared/specs/shapes-world.md``): right-handed, +Z up, objects
centred at the origin inside the scene box ``[-bound, bound]^3``. Cameras and rays come from
:mod:`dream3d.shapes.camera` (OpenGL camera axes). Exported meshes use glTF's +Y-up frame.

Modules: :mod:`.hashgrid`, :mod:`.field`, :mod:`.background`, :mod:`.sampler`, :mod:`.renderer`,
:mod:`.export`. Import from them directly; this package imports nothing heavy on its own.
"""
