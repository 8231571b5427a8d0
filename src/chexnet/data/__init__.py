"""From a user's table and images to the prepared cache, the patient split and the training set."""
