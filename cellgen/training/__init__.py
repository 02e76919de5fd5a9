"""Training, evaluating and exporting sequence models: `cellgen train | eval | export`, and
`cellgen.training.train(spec, dataset, …)` in Python (api.py).

One concept per module: files (atomic writes), png (image files), strip (the predictions
picture), animation and gif (predictions.gif), curves and raster (curves.png), metrics (the
papers' per-frame MSE, MAE, SSIM, PSNR), logs (metrics.csv, TensorBoard), schedule (learning
rate, clipping), runconfig (--config), batches (which sequences each step reads), checkpoint,
distributed (DDP), progress, evaluate, trainer, commands (the CLI), api (train() in Python).
"""


def __getattr__(name):
    # Lazily, so that the CLI can import this package without importing torch.
    if name in ("train", "TrainedRun"):
        from cellgen.training import api

        return getattr(api, name)
    raise AttributeError(f"module 'cellgen.training' has no attribute {name!r}")
