"""Evaluation binaries: k-NN, linear probe, fine-tuning, export, pictures."""
