"""Python's cycle collector, set for a long-running server process (the API, a job worker).

With the defaults (a collection every 700 new container objects) the collector took about 15 %
of the API's CPU under load and 5 % of a worker's: each collection of the older generations
walked the tens of thousands of objects that start-up made (modules, web3's and pydantic's
classes, the registry) and that live as long as the process. After start-up they are moved out
of the collector's sight (`gc.freeze`), and the youngest generation is collected every 10,000
new objects instead of 700 (the older ones, as before, every 10 collections of the one below).
Memory held by garbage cycles stays small: a request or a job makes few, and they are still
collected, only in larger batches. Objects freed by reference counting (nearly all) are freed at
once as before. Settle before opening connection pools: a pool replaces its connections from time
to time, and frozen objects are never collected.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 10, 10)

_settled = False


def settle() -> None:
    """Call once start-up is done; later calls in the same process do nothing."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
