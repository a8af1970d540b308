"""vfer: video-based facial expression recognition as a reproducible Snakemake workflow."""

__version__ = "0.1.0"

#: The six basic expression classes, in the order used for labels and tables.
BASIC_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
