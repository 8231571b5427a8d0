"""Heat maps: Grad-CAM++ and how well they point at the boxes experts drew."""
