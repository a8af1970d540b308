"""vfer: video-based facial expression recognition as a reproducible Snakemake workflow."""

__version__ = "0.1.0"

#: The six basic expression classes, in the order used for labels and tables.
BASIC_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")


def predict(model, inputs, out="predictions", device="auto", batch=32, progress=True):
    """Predict videos with a final-model bundle; returns the predictions table (a DataFrame)
    and writes predictions.tsv, segments.tsv, timelines/ and run.json under ``out``
    (vfer.prediction.predict; imported here on first call, so ``import vfer`` stays light)."""
    from vfer.prediction import predict as run

    return run(model, inputs, out=out, device=device, batch=batch, progress=progress)
