"""The embeddings mechanisms' configurations, case builders and registrations (one module per mechanism)."""
