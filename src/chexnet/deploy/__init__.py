"""Using a trained model on new studies, outside the pipeline."""
