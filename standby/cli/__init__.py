"""The command line behind ``python -m standby``: the demo and the store command.

``simulate`` and ``campaign`` live beside the simulator, in
:mod:`standby.testing.simulation`; the argument types are shared here.
"""
