"""A REST service that trains feed-forward neural networks and serves their predictions."""

__version__ = "0.1.0"

# How the service names itself to other software (OIP server metadata, exported files).
PRODUCT_NAME = "nn-training-service"
