"""The host's dict view of a BPF map, shared by a map the kernel holds (`load.KernelMap`) and a
map of the userspace engine (`runtime.engine.maps.EngineMap`): a script reading
`live.maps["hits"]` and one reading `ring.maps["hits"]` get the same methods with the same
behaviour, because they are the same methods.

A subclass supplies the raw side, which is where the two differ (a bpf() syscall or the
engine's memory): `raw_value(key bytes)` (the value's bytes, or None when the key is missing),
`raw_keys()` (the keys' bytes), `_key`/`_value`/`_decode` (host values to and from bytes,
`values.pack`/`unpack`), `set(key, value, flags)` and `__delitem__` (each raising as the bpf()
syscall does).  This module sits in bpf/, below both the loader and the runtime.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from ..uapi import MAP_TYPE_NAMES
from .values import unpack


class MapView:
    """`m[k]` (KeyError when missing), `m.get(k)`, `k in m`, `m[k] = v`, `keys()`, `items()`,
    `values()`, `len()`, iteration over the keys; `records()` only on a ring buffer."""

    name: str
    type: int
    key_type: Any

    def raw_value(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    def raw_keys(self) -> Iterable[bytes]:
        raise NotImplementedError

    def _key(self, key: Any) -> bytes:
        raise NotImplementedError

    def _decode(self, raw: bytes) -> Any:
        raise NotImplementedError

    def set(self, key: Any, value: Any, flags: int = 0) -> None:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> Any:
        """The value (a list with one value per CPU for per-CPU maps)."""
        raw = self.raw_value(self._key(key))
        if raw is None:
            raise KeyError(key)
        return self._decode(raw)

    def get(self, key: Any, default: Any = None) -> Any:
        raw = self.raw_value(self._key(key))
        return default if raw is None else self._decode(raw)

    def __contains__(self, key: Any) -> bool:
        return self.raw_value(self._key(key)) is not None

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)

    def keys(self) -> list:
        """A snapshot of the keys (walking a hash map while a program changes it may skip keys
        or restart, so the walk is done once, here)."""
        return [unpack(k, self.key_type) for k in self.raw_keys()]

    def __iter__(self) -> Iterator:
        return iter(self.keys())

    def __len__(self) -> int:
        return sum(1 for _ in self.raw_keys())

    def items(self) -> list[tuple]:
        out = []
        for raw in self.raw_keys():
            value = self.raw_value(raw)
            if value is not None:  # deleted by a program between the two reads
                out.append((unpack(raw, self.key_type), self._decode(value)))
        return out

    def values(self) -> list:
        return [v for _, v in self.items()]

    def records(self, timeout: float | None = 0, as_type: Any = None) -> Iterator:
        """A ring buffer's records (its subclass's); other maps have keys instead."""
        raise TypeError(f"map {self.name!r} is a {MAP_TYPE_NAMES.get(self.type, self.type)} map; "
                        "records() reads a ring buffer")
