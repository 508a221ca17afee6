"""The paper's figures and ours, drawn from a finished run (``sharpgen figure NAME``; rules in figures.smk)."""
