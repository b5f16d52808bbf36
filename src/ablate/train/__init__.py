"""Training: the LightningModule and the stage runner."""
