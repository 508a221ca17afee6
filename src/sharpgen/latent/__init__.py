"""Stage 5, latent directions: fit InterFaceGAN-style SVM directions, then steer latents to physical targets.

Rule ``fit_directions``; results ``directions/``. ``sharpgen generate`` and ``edit`` use the same code.
"""
