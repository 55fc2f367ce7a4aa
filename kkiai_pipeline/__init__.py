"""kkiai-pipeline: YAML pipelines of image-generation predictions on the kkiai API."""

__version__ = "0.1.0"
