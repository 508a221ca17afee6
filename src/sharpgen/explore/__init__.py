"""``sharpgen explore``: an interactive page over a finished run (sliders, generated patch, real matches)."""
