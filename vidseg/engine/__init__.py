"""The training engine: launch (single / ``--num-gpus`` / torchrun), the trainer and its hooks, optimizer and
schedules, crash-safe checkpoints with exact resume, evaluation during training, metric writers.

Modules: ``run`` (train / eval jobs), ``trainer`` (loop + ``HookBase``), ``hooks``, ``optim``, ``sampler``,
``checkpoint``, ``evaluate``, ``writers`` (JSON lines, Visdom, TensorBoard), ``launch``, ``dist``, ``setup``,
``entry`` (command-line plumbing). Nothing is imported here. See docs/training.md.
"""
