"""ToyVIS: a tiny query-based clip mask model for the engine's tests and the quickstart.

Modules: ``config`` (``MODEL.TOY.*`` keys), ``model``, ``criterion`` (matcher + losses), ``inference``, and
``build`` (registers ``build(cfg) -> ModelBundle`` as ``ToyVIS``). Nothing is imported here, so reading the
config keys does not import torch.
"""
