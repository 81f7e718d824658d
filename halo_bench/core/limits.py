"""Bounds every stage checks values against, so a flag, a registry recipe and a derived seed
agree on them."""

# torch's CPU generator (mt19937) keeps only a seed's low 32 bits, so a larger seed trains the
# run of a smaller one; numpy's legacy seeding and SeedSequence words are 32 bits too.
MAX_SEED = 2**32 - 1

# Bounds on the SGD recipe, far above any sensible value: beyond float32's range the optimizer
# fails with an overflow traceback instead of a diverged run (train's divergence check).
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 1.0
