"""Batches: many runs of one command, on worker processes, a Ray cluster or a job array.

- :mod:`.items`: prompts file, seeds, one run folder per (prompt, seed), shards;
- :mod:`.backends`: where the items run (:class:`~.backends.LocalBackend`,
  :class:`~.backends.RayBackend`), surviving the death of a worker;
- :mod:`.index`: ``index.jsonl`` and the contact sheet, rebuilt from the run folders;
- :mod:`.txt2mesh`: ``dream3d batch txt2mesh`` (:func:`~.txt2mesh.run_batch`).

``docs/batch.md`` has the command lines; ``docs/scale.md`` what large batches cost.
"""
