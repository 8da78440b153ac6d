"""The training engine: launch (single / ``--num-gpus`` / torchrun), the trainer and its hooks, optimizer and
schedules, crash-safe checkpoints with exact resume, evaluation during training, metric writers.

Modules: ``run`` (train / eval jobs), ``trainer`` (loop + ``HookBase``), ``hooks``, ``optim``, ``sampler``,
``checkpoint``, ``evaluate``, ``writers`` (JSON lines, curves.png, Visdom, TensorBoard; their plots grouped by
``metric_groups``, drawn by ``curves`` and ``visdom_writer``), ``launch``, ``dist``, ``setup``, ``entry``
(command-line plumbing). Nothing is imported here. See docs/training.md.
"""
