"""Foundations every layer may use: errors the user fixes, atomic file writes, finding names."""
