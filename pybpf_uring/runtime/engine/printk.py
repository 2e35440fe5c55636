"""bpf_trace_printk's formatting as the kernel does it, bounded: what the engine's print helper
writes to `instance.trace` and returns.

The kernel checks the format before printing anything (`bpf_bprintf_prepare`) and refuses,
with -EINVAL, what it does not know; it then prints into a fixed buffer.  Both halves matter
here because a program's format is untrusted input to the host: a width of 999999999 must not
make a string of a gigabyte, and no format may raise into the host.  So:

* the format is the kernel's grammar, not Python's `%`: `%%`, then per conversion the flags
  `0 + - space`, a width (digits, no precision), and `d i u x X` with `l`/`ll` (none: 32-bit,
  as the kernel casts), `c`, `s`, `p` with its suffixes (`%pks`/`%pus` strings, `%pI4 %pi4
  %pI6 %pi6` addresses, `%pK %px %ps %pS` and a bare `%p` the pointer); anything else, a fourth
  conversion or a character that is neither printable ASCII nor white space is -EINVAL;
* a width is the kernel's int, clamped to FIELD_WIDTH_MAX (one that wraps negative pads nothing);
* the strings `%s` reads share the kernel's MAX_BPRINTF_BIN_ARGS bytes with the other
  arguments (a longer string is cut; one it cannot read prints as empty, as the kernel's);
* the line is cut to BPRINTF_BUF - 1 bytes, and the helper returns the length the whole line
  would have had (vsnprintf's result, which the kernel returns) -- computed, never built.

The pointer conversions print the engine's address in hex: the kernel hashes `%p` with a
per-boot key and resolves `%ps`/`%pS` to kernel symbols, neither of which a userspace engine has.
"""
from __future__ import annotations

import errno

from ...limits import MAX_PRINT_ARGS
from .memory import Memory, MemoryFault

__all__ = ["format_trace", "Printed", "BPRINTF_BUF", "BIN_ARGS", "FIELD_WIDTH_MAX"]

BPRINTF_BUF = 1024             # the kernel's MAX_BPRINTF_BUF: the printed line, NUL included
BIN_ARGS = 512                 # the kernel's MAX_BPRINTF_BIN_ARGS: values and copied strings
FIELD_WIDTH_MAX = (1 << 23) - 1   # lib/vsprintf.c's clamp of a field width
_M64 = (1 << 64) - 1


class Printed:
    """A formatted line: `text` as the trace buffer holds it (cut to BPRINTF_BUF - 1 bytes) and
    `length`, the bytes the whole line has (what the helper returns)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.kept = 0                 # bytes in parts, at most BPRINTF_BUF - 1
        self.length = 0

    def add(self, data: bytes, pad: int = 0, fill: bytes = b" ", left: bool = False) -> None:
        """`data` padded with `pad` copies of `fill` (after it when `left`); only what fits the
        kernel's buffer is made."""
        for piece, count in ((data, 1), (fill, pad)) if left else ((fill, pad), (data, 1)):
            self.length += len(piece) * count
            room = BPRINTF_BUF - 1 - self.kept
            if room > 0 and count:
                chunk = (piece * min(count, room // max(len(piece), 1) + 1))[:room]
                self.parts.append(chunk)
                self.kept += len(chunk)

    @property
    def text(self) -> str:
        """The line as the trace buffer shows it: the kernel records it as a C string, so a NUL
        (a `%c` of 0) ends it, though `length` counts what follows."""
        return b"".join(self.parts).split(b"\0", 1)[0].decode(errors="replace")


def format_trace(mem: Memory, fmt: bytes, args: tuple[int, int, int]) -> Printed | int:
    """bpf_trace_printk's line for `fmt` (without its NUL) and the three values, or the
    negative errno the kernel returns instead: -EINVAL for a format it refuses, -ENOSPC when
    the strings leave no room for a value (see the module docstring)."""
    if any(not (32 <= c < 127 or c in b"\t\n\v\f\r") for c in fmt):
        return -errno.EINVAL          # the kernel: isprint() or isspace(), and isascii()
    out, used, pos = Printed(), 0, 0     # pos: bytes of the kernel's argument buffer used
    i, n = 0, len(fmt)
    literal = 0
    while i < n:
        if fmt[i] != 0x25:            # '%'
            i += 1
            continue
        out.add(fmt[literal:i])
        if fmt[i + 1:i + 2] == b"%":
            out.add(b"%")
            i += 2
            literal = i
            continue
        if used == MAX_PRINT_ARGS:
            return -errno.EINVAL
        i += 1
        flags = b""
        while fmt[i:i + 1] in (b"0", b"+", b"-", b" "):
            flags += fmt[i:i + 1]
            i += 1
        digits = b""
        if fmt[i:i + 1] in b"123456789" and i < n:
            while i < n and fmt[i:i + 1] in b"0123456789":
                digits += fmt[i:i + 1]
                i += 1
        width, left = _width(digits), b"-" in flags
        conversion, i = _conversion(fmt, i)
        if conversion is None:
            return -errno.EINVAL
        value = args[used] & _M64
        used += 1
        # the kernel's argument buffer: strings, chars and addresses packed, values 4-aligned
        if conversion not in ("s", "ks", "us", "c", "pI4", "pi4", "pI6", "pi6"):
            pos = (pos + 3) & ~3
        size = _SIZES.get(conversion, 8)
        if BIN_ARGS - pos < max(size, 1):
            return -errno.ENOSPC
        if size == 0:
            text = _c_string(mem, value, BIN_ARGS - pos)
            pos += len(text) + 1
        else:
            pos += size
            text = _convert(mem, conversion, value, flags)
        if text is None:
            return -errno.EINVAL
        numeric = conversion[0] in "duxX"
        zero = numeric and b"0" in flags and not left
        pad = max(width - len(text), 0)
        if zero and text[:1] in (b"-", b"+", b" "):
            out.add(text[:1])
            out.add(text[1:], pad, b"0")
        else:
            out.add(text, pad, b"0" if zero else b" ", left)
        literal = i
    out.add(fmt[literal:])
    return out


# bytes a conversion takes in the argument buffer (0: a string, as long as it is)
_SIZES = {"d32": 4, "u32": 4, "x32": 4, "X32": 4, "c": 1, "pI4": 4, "pi4": 4, "pI6": 16,
          "pi6": 16, "s": 0, "ks": 0, "us": 0}


def _width(digits: bytes) -> int:
    """The field width as the kernel's int parser and clamp make it.  Digits that wrap the int
    to a negative value pad nothing, `-` flag or not (a negative width only left-aligns when it
    comes from a `*` argument, which bpf formats cannot have)."""
    value = 0
    for d in digits:                  # skip_atoi's int, which wraps
        value = (value * 10 + d - 48) & 0xFFFFFFFF
    return 0 if value >> 31 else min(FIELD_WIDTH_MAX, value)


def _conversion(fmt: bytes, i: int) -> tuple[str | None, int]:
    """(the conversion at fmt[i:], the index after it); None for one the kernel refuses."""
    c = fmt[i:i + 1]
    if c == b"p":
        nxt, third = fmt[i + 1:i + 2], fmt[i + 2:i + 3]
        if nxt in (b"k", b"u") and third == b"s":
            return nxt.decode() + "s", i + 3
        if nxt == b"" or nxt.isspace() or _punct(nxt) or nxt in (b"K", b"x", b"s", b"S"):
            return "p", i + 1 + (nxt in (b"K", b"x", b"s", b"S"))
        if nxt in (b"i", b"I") and third in (b"4", b"6"):
            return "p" + (nxt + third).decode(), i + 3
        return None, i
    if c == b"s":
        return "s", i + 1
    if c == b"c":
        return "c", i + 1
    bits = 32
    if fmt[i:i + 1] == b"l":
        bits, i = 64, i + 1
        if fmt[i:i + 1] == b"l":
            i += 1
    c = fmt[i:i + 1]
    if c in (b"d", b"i"):
        return f"d{bits}", i + 1
    if c in (b"u", b"x", b"X"):
        return f"{c.decode()}{bits}", i + 1
    return None, i


def _punct(c: bytes) -> bool:
    return len(c) == 1 and 33 <= c[0] < 127 and not c.isalnum()


def _convert(mem: Memory, conversion: str, value: int, flags: bytes) -> bytes | None:
    kind, bits = conversion[0], conversion[1:]
    if kind in "duxX" and bits in ("32", "64"):
        value &= (1 << int(bits)) - 1
        if kind == "d":
            if value >> (int(bits) - 1):
                return b"-%d" % ((1 << int(bits)) - value)
            sign = b"+" if b"+" in flags else b" " if b" " in flags else b""
            return sign + b"%d" % value
        return (b"%d" if kind == "u" else b"%x" if kind == "x" else b"%X") % value
    if conversion == "c":
        return bytes([value & 0xFF])
    if conversion == "p":
        return b"0x%x" % value
    try:                              # %pI4 %pi4 %pI6 %pi6: the address the pointer points to
        raw = mem.read(value, 4 if conversion.endswith("4") else 16)
    except MemoryFault:
        return None
    if conversion in ("pI4", "pi4"):
        return ".".join(("%d" if conversion == "pI4" else "%03d") % b for b in raw).encode()
    if conversion == "pi6":
        return raw.hex().encode()
    return b":".join(raw[k:k + 2].hex().encode() for k in range(0, 16, 2))


def _c_string(mem: Memory, address: int, room: int) -> bytes:
    """A NUL-terminated string in program memory, cut to the room the kernel's argument buffer
    has left; empty where it cannot be read, as the kernel's copy gives."""
    if room <= 1:
        return b""
    try:
        region, offset = mem.resolve(address, 1, "read")
    except MemoryFault:
        return b""
    raw = bytes(region.buf[offset:offset + room - 1])
    return raw.split(b"\0", 1)[0]
