"""Dataset presets: one module per public table layout, collected in registry."""
