"""Exhaustive exploration of the shipped machines (``python -m standby explore``)."""
