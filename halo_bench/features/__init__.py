"""One forward pass per split (logits, embeddings, penultimate features) and its on-disk cache."""
