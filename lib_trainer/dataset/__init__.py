"""Training data: kohya folder conventions, captions, buckets, the latent cache."""
