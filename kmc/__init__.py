"""kmc: kinetic Monte Carlo of ion transport in partly amorphous battery electrodes."""

__version__ = "0.1.0"
