"""The oracle's implementations: readable forward passes and hand-derived backward passes.

Sections mirror the ICLR 2020 survey: ``attention``, ``objectives``,
``embeddings``, ``architecture``; ``nn`` holds the shared building blocks.
Every mechanism is also a record in :mod:`reference.registry`.
"""

__version__ = "0.1.0"
