"""The params schema: what params.yaml may hold, checked before any work starts."""
