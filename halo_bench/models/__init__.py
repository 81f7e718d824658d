"""The model stage: timm backbones + embedding + head, checkpoints, weights in, foreign classifiers."""
