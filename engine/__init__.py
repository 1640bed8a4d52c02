"""Flow engine: record schemas, serialization, topic catalogue (and later the flow model, SDK, compiler)."""
