"""The chexnet command."""
