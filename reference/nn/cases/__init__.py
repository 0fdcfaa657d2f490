"""The building blocks' configurations, case builders and registrations (one module per block)."""
