"""Training: networks, data preparation and the loop. Knows nothing of the database or HTTP."""
