"""Sweeps: searches over hyperparameters whose trials are ordinary jobs. The search (search.py)
turns a base job and a grid or a random space into one job request per trial; the records
(records.py) store and read them; trials that share a shape train together as one stacked
model (service/training/stacked_trainer.py)."""
