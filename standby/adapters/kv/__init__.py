"""What the transports over one linearizable key-value store share (etcd, Redis).

Their public faces are :mod:`standby.adapters.etcd` and
:mod:`standby.adapters.redis`.
"""
