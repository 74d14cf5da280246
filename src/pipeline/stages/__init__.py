"""The pipeline's stages that are not a method family: data, retrain, transfer, latency, tables."""
