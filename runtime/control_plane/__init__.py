"""Control plane services (config, schema registry, APIs)."""
