"""Training, evaluating and exporting sequence models: `cellgen train | eval | export`.

One concept per module: files (atomic writes), png (image files), strip (the predictions
picture), metrics (the papers' per-frame MSE, MAE, SSIM, PSNR), batches (which sequences each
step reads), checkpoint, distributed (DDP), progress, evaluate, trainer, commands (the CLI).
"""
