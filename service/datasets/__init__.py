"""Datasets: training data uploaded once (CSV, .npz or JSON) and trained from by many jobs.

    csv_upload, array_upload   read an upload (streamed from a file) into checked columns
    columns, target            check and summarise the features and the target as they arrive
    safetensors_file, assemble write the stored form: float64 columns, labels as indices
    records                    the datasets table: store, list, read, delete (owner-checked)
    training_data              a job's data as the worker trains on it, inline or a dataset

The routes are in service/api/routes/datasets.py; a job that names a dataset is built (and
checked from the dataset's stored summary) in service/submission.py.
"""
