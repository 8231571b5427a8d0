"""What only the DVC pipeline knows: where files live, how a stage runs and records its results."""
