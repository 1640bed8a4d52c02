"""Built-in node types, one module per type."""
