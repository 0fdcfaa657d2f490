"""Third-party modules against the oracle in one call: :mod:`.huggingface` (transformers) and :mod:`.lucidrains`."""
