"""sharpgen: a physically interpretable generative model of solar active regions (SDO/HMI SHARP)."""

__version__ = "0.1.0"
