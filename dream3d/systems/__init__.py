"""Systems: one method each, made of parts, with its loss terms and their weights (:mod:`.base`).

:class:`~dream3d.systems.dreamfusion.DreamFusion` is text to 3D by score distillation into a
NeRF. The :class:`~dream3d.trainer.Trainer` runs a system.
"""
