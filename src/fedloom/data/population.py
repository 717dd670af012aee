"""Client populations generated on demand, so memory grows with the cohort, not the population.

A :class:`LazyClients` sequence makes client ``i``'s data only when someone asks for it, from a
function of ``i`` alone (its own random stream), and keeps a bounded cache of recent clients.
A simulation of 100,000 devices then holds only the clients of the current round.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import overload

from fedloom.data._checks import check_int
from fedloom.data.federated import ClientData


class LazyClients(Sequence[ClientData]):
    """``count`` clients, client ``i`` made by ``make(i)`` when first needed.

    ``make`` must be deterministic in ``i`` and return ``ClientData`` with ``client_id == i``;
    at most ``cache`` clients are kept, least recently used first out.
    """

    def __init__(self, count: int, make: Callable[[int], ClientData], *, cache: int = 4096):
        self._count = check_int("count", count, minimum=1)
        self._cache_size = check_int("cache", cache, minimum=1)
        self._make = make
        self._cache: OrderedDict[int, ClientData] = OrderedDict()

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> ClientData: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ClientData]: ...

    def __getitem__(self, index: int | slice) -> ClientData | Sequence[ClientData]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"client {index} is outside this population of {self._count}")
        index %= self._count
        client = self._cache.get(index)
        if client is None:
            client = self._make(index)
            if client.client_id != index:
                raise ValueError(f"make({index}) returned client_id={client.client_id}")
            self._cache[index] = client
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        return client

    def __iter__(self) -> Iterator[ClientData]:
        return (self[i] for i in range(self._count))

    def __repr__(self) -> str:
        return f"LazyClients({self._count} clients, {len(self._cache)} in memory)"


def client_lookup(clients: Sequence[ClientData]) -> Callable[[int], ClientData | None]:
    """A function from client id to its data: by position for a lazy population (ids are
    positions there, and nothing is generated up front), through a dictionary otherwise."""
    if isinstance(clients, LazyClients):

        def positional(client: int) -> ClientData | None:
            return clients[client] if 0 <= client < len(clients) else None

        return positional
    table = {c.client_id: c for c in clients}
    if len(table) != len(clients):
        raise ValueError("client ids must be unique")
    return table.get
