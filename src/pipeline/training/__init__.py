"""What the training loops share: the resumable epoch loop, steps, data-parallel processes, streamed data."""
