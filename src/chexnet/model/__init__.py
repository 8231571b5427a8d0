"""The network and the model file that says how to use it."""
