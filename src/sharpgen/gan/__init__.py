"""Stages 3-4, the GAN: train it, sample and measure it in bulk, invert real patches into its latent space.

Rules ``train_gan`` and ``sample``; conda env ``envs/torch.yaml``; results ``gan/`` and ``samples/``.
"""
