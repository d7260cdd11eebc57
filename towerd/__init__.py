"""towerd: the daemon on each border sensor tower.

Data flows one way: serial bytes -> driver -> detection -> tracking -> reports ->
outbox -> uplink. Lower layers never import higher ones.
"""

__version__ = "0.1.0"
