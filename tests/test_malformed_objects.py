"""Malformed objects never crash the reader, the loader or the CLI.

A seeded mutator corrupts real objects -- the samples compiled by `compile_file` and, where
clang-22 is installed, the C fixtures of tests/data -- where a reader trusts them: the ELF
header, section headers, symbols, relocation entries, `.BTF` and `.BTF.ext` headers, records,
lengths and offsets, string tables, the BTF that defines maps, and instructions, besides
flipped bytes and truncations.  Every mutant goes through `BpfObject.read`, both disassemblies,
`kernel_btf()` and each program's `linked()`; in the kernel layer, `obj.load()`; and the CLI's
`disasm -r` and `verify`.  The one allowed outcome besides success is a named error: an
`ObjectError` (the CLI: exit 1 and `FILE: error: ...`) or a `LoadError`; never another
exception, a traceback, an abort or a hang.

Each mutant runs in a subprocess (in batches, this file's own `__main__` as the worker), so an
abort or a hang fails the case that caused it instead of the test run: the worker reports each
case as it finishes, and the first unreported one of a batch that died is run alone to confirm
it.  A CLI batch whose output breaks a rule is halved until the files that break it are named.

Mutants are numbered; case N is the same bytes on every run (random.Random seeded by N), so a
failure names a case anyone can rebuild with `mutant(seeds, N)`.  PYBPF_URING_FUZZ_CASES=N
runs N cases instead of the CI's few hundred.  Each defect the campaign found has its object in
tests/data/malformed/, with the error it must now give (`REGRESSIONS`).
"""
from __future__ import annotations

import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
MALFORMED = DATA / "malformed"
CASES = int(os.environ.get("PYBPF_URING_FUZZ_CASES", "500"))
BATCH = 100                    # mutants per worker process
CASE_SECONDS = 10              # a case slower than this is a hang
MAP_BUDGET = 64 << 20          # bytes of kernel memory the maps of one loaded mutant may ask for
MAX_SEED_BYTES = 64 << 10      # larger objects (disasm_gotol.c's) make slow cases, not new ones
# seeds whose every load makes the verifier walk to its 1M-instruction limit (~3 s a rejected
# load, most of it the logged walk that explains the refusal): their mutants are read, not loaded
SLOW_TO_VERIFY = ("read_recursion.c",)


# --- seeds: real objects ----------------------------------------------------------------------
def sample_seeds() -> dict[str, bytes]:
    from pybpf_uring.compiler.pipeline import compile_file
    seeds = {}
    for path in sorted((ROOT / "samples").glob("*.py")):
        for cpu in ("v2", "v4") if path.name == "packet_stats.py" else ("v3",):
            seeds[f"{path.stem}.py.{cpu}"] = compile_file(path, cpu).elf
    return seeds


def clang_seeds(out_dir: Path) -> dict[str, bytes]:
    """tests/data/*.c compiled as the other tests compile them (empty without clang-22)."""
    import probes
    if probes.missing("clang"):
        return {}
    seeds = {}
    for src in sorted(DATA.glob("*.c")):
        out = out_dir / f"{src.stem}.o"
        run = subprocess.run([probes.CLANG, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-c",
                              str(src), "-o", str(out)], capture_output=True)
        if run.returncode == 0 and out.stat().st_size <= MAX_SEED_BYTES:
            seeds[f"{src.stem}.c"] = out.read_bytes()
    return seeds


# --- anatomy: where a seed keeps what the reader trusts ---------------------------------------
@dataclass(frozen=True)
class Field:
    area: str       # what kind of structure: "section header", "btf.ext", "map", ...
    what: str       # which one, for the case's description
    offset: int
    size: int       # 1, 2, 4 or 8 bytes, little-endian
    hints: tuple[int, ...] = ()   # values that mean something here: indices, counts, own id


@dataclass(frozen=True)
class Anatomy:
    fields: dict[str, list[Field]]             # by area
    strings: list[tuple[str, int, int]]        # (table, start, end) of each string table


_UNSIGNED = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
SHN_ABS, SHN_COMMON = 0xFFF1, 0xFFF2
_SHDR = (("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 8), ("sh_offset", 24, 8),
         ("sh_size", 32, 8), ("sh_link", 40, 4), ("sh_info", 44, 4), ("sh_entsize", 56, 8))
_SYM = (("st_name", 0, 4), ("st_info", 4, 1), ("st_shndx", 6, 2), ("st_value", 8, 8),
        ("st_size", 16, 8))
_REL = (("r_offset", 0, 8), ("r_type", 8, 4), ("r_sym", 12, 4))
_INSN = (("opcode", 0, 1), ("regs", 1, 1), ("off", 2, 2), ("imm", 4, 4))
# meaningful values: section types (PROGBITS, SYMTAB, STRTAB, RELA, NOBITS, REL, llvm_addrsig),
# symbol types x binds, opcodes (lddw, call, exit, ja, gotol, mov, ldx, stx), pseudo sources
_HINTS = {"sh_type": (0, 1, 2, 3, 4, 8, 9, 0x6FFF4C03), "sh_flags": (0, 1, 2, 4, 6),
          "st_info": tuple(bind << 4 | kind for bind in (0, 1, 2) for kind in (0, 1, 2, 3, 4)),
          "r_type": (0, 1, 2, 3, 4, 10), "opcode": (0x18, 0x85, 0x95, 0x05, 0x06, 0xB7, 0x79, 0x7B),
          "regs": (0x10, 0x20, 0x40, 0x01, 0x1A, 0xF0, 0x0B)}


def anatomy(data: bytes) -> Anatomy:
    """The fields of a valid object, found with pyelftools and the project's BTF reader."""
    from elftools.elf.elffile import ELFFile

    from pybpf_uring.bpf import btf as btfmod
    elf = ELFFile(io.BytesIO(data))
    fields: dict[str, list[Field]] = {}

    def add(area: str, what: str, offset: int, size: int, hints: tuple[int, ...] = ()) -> None:
        fields.setdefault(area, []).append(Field(area, what, offset, size, hints))

    count = elf.num_sections()
    sections = tuple(range(count + 1)) + (SHN_ABS, SHN_COMMON, 0xFFFF)
    for name, off, size in (("e_ident class", 4, 1), ("e_ident data", 5, 1), ("e_type", 0x10, 2),
                            ("e_machine", 0x12, 2), ("e_shoff", 0x28, 8), ("e_shentsize", 0x3A, 2),
                            ("e_shnum", 0x3C, 2), ("e_shstrndx", 0x3E, 2)):
        add("elf header", name, off, size, sections if name.startswith("e_sh") else ())
    shoff = elf["e_shoff"]
    shstrtab = elf.get_section(elf["e_shstrndx"])["sh_size"]
    strings = []
    by_name = {}
    symbols = 0
    for i, sec in enumerate(elf.iter_sections()):
        by_name[sec.name] = sec
        body, length = sec["sh_offset"], sec["sh_size"]
        for name, off, size in _SHDR:
            hints = sections if name in ("sh_link", "sh_info") else _HINTS.get(name, ())
            if name == "sh_name":   # string offsets: the end of the table, just before and after
                hints = (0, shstrtab - 1, shstrtab, shstrtab + 1)
            if name in ("sh_size", "sh_offset"):
                hints = (length - 1, length + 8, len(data) - body, 1 << 32, (1 << 32) + 8)
            add("section header", f"{sec.name or i} {name}", shoff + 64 * i + off, size, hints)
        if sec["sh_type"] == "SHT_STRTAB":
            strings.append((sec.name, body, body + length))
        elif sec["sh_type"] == "SHT_SYMTAB":
            symbols = length // 24
            strtab = elf.get_section(sec["sh_link"])["sh_size"]
            for n in range(1, symbols):
                for name, off, size in _SYM:
                    hints = {"st_shndx": sections, "st_name": (0, strtab - 1, strtab, strtab + 1)}
                    add("symbol", f"symbol {n} {name}", body + 24 * n + off, size,
                        hints.get(name, _HINTS.get(name, (8, 16, 24))))
    for i, sec in enumerate(elf.iter_sections()):
        body, length = sec["sh_offset"], sec["sh_size"]
        if sec["sh_type"] in ("SHT_REL", "SHT_RELA"):
            entry = 24 if sec["sh_type"] == "SHT_RELA" else 16
            target = elf.get_section(sec["sh_info"])["sh_size"] if sec["sh_info"] < count else 0
            for n in range(length // entry):
                for name, off, size in _REL:
                    hints = {"r_sym": tuple(range(symbols + 1)),
                             "r_offset": (target - 8, target, target + 8, 4)}.get(name, _HINTS.get(name, ()))
                    add("relocation", f"{sec.name}[{n}] {name}", body + entry * n + off, size, hints)
        elif sec["sh_type"] == "SHT_PROGBITS" and sec["sh_flags"] & 0x4:
            for n in range(length // 8):
                for name, off, size in _INSN:
                    hints = _HINTS.get(name, (-n - 1, length // 8 - n, 0x7FFFFFFF))
                    add("code", f"{sec.name} insn {n} {name}", body + 8 * n + off, size, hints)
        if sec.name in (".data", ".rodata", ".bss") or sec.name.startswith((".data.", ".rodata.")):
            add("map", f"{sec.name} sh_size", shoff + 64 * i + 32, 8,
                (0, 1, 3, 1 << 20, 1 << 32, (1 << 32) + 4, 1 << 62))
    if ".BTF" in by_name:
        at = by_name[".BTF"]["sh_offset"]
        btf = btfmod.parse_btf(data[at:at + by_name[".BTF"]["sh_size"]])
        _btf_fields(add, strings, btf, at, data)
        if ".BTF.ext" in by_name:
            ext = by_name[".BTF.ext"]
            _btf_ext_fields(add, data, ext["sh_offset"], ext["sh_size"],
                            (len(btf.types) - 1, len(btf.types), len(btf.strings) - 1, len(btf.strings)))
    return Anatomy(fields, strings)


def _btf_fields(add, strings, btf, at: int, data: bytes) -> None:
    from pybpf_uring.bpf import btf as btfmod
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, at + 4)
    for name, off in (("magic", 0), ("hdr_len", 4), ("type_off", 8), ("type_len", 12),
                      ("str_off", 16), ("str_len", 20)):
        add("btf header", name, at + off, 2 if name == "magic" else 4,
            (type_len, str_len, str_off, type_len + str_len, 24, 23, 25))
    strings.append((".BTF strings", at + hdr_len + str_off, at + hdr_len + str_off + str_len))
    # each record's length is its own encoding's (encode_btf of that one type)
    record = at + hdr_len + type_off
    starts = {}
    types = len(btf.types)
    kinds = tuple(kind << 24 | vlen for kind in range(21) for vlen in (0, 1, 2, 0xFFFF))
    for type_id, t in enumerate(btf.types[1:], start=1):
        starts[type_id] = record
        # type ids: its own (a cycle), its neighbours', the last and one past it
        ids = (type_id, type_id - 1, type_id + 1, types - 1, types, 0)
        names = (0, str_len - 1, str_len, str_len + 1, 1 << 31)   # string offsets
        length = struct.unpack_from("<I", btfmod.encode_btf([btfmod.Void(), t]), 12)[0]
        for word in range(length // 4):
            add("btf type", f"type {type_id} ({t.kind}) word {word}", record + 4 * word, 4,
                {0: names, 1: kinds}.get(word, ids + names[1:3]))
        record += length
    # libbpf's map definitions: `.maps` variables are structs of pointers to arrays (__uint)
    # and to the key and value types (__type)
    for sec in (t for t in btf.types if isinstance(t, btfmod.Datasec) and t.name == ".maps"):
        for v in sec.vars:
            var = btf[v.type]
            struct_type = btf[btf.resolve(var.type)]
            for m in getattr(struct_type, "members", ()):
                ptr_id = btf.resolve(m.type)
                add("map", f"map {var.name} {m.name} pointer", starts[ptr_id] + 8, 4,
                    (ptr_id, var.type, v.type, 0, len(btf.types)))
                target = btf.resolve(btf[ptr_id].type)
                if isinstance(btf[target], btfmod.Array):
                    add("map", f"map {var.name} {m.name} nelems", starts[target] + 20, 4,
                        tuple(range(34)) + (1 << 16, 1 << 31, (1 << 32) - 1))


def _btf_ext_fields(add, data: bytes, at: int, size: int, ids: tuple[int, ...]) -> None:
    """`ids`: the last type id and the end of the string table, and one past each."""
    hdr_len = struct.unpack_from("<I", data, at + 4)[0]
    parts = (("func_info", 8), ("line_info", 16), ("core_relo", 24))
    for name, off in (("magic", 0), ("hdr_len", 4)) + tuple(
            (f"{part} {what}", off + d) for part, off in parts for what, d in (("off", 0), ("len", 4))):
        if off + 4 <= hdr_len:
            add("btf.ext", name, at + off, 2 if name == "magic" else 4)
    for part, off in parts:
        if off + 8 > hdr_len:
            continue
        block_off, block_len = struct.unpack_from("<II", data, at + off)
        start, end = at + hdr_len + block_off, at + hdr_len + block_off + block_len
        if not block_len:
            continue
        rec_size = struct.unpack_from("<I", data, start)[0]
        add("btf.ext", f"{part} rec_size", start, 4, (0, 4, 7, 8, 12, 16, 17, 1 << 31))
        pos = start + 4
        while pos + 8 <= end:
            count = struct.unpack_from("<I", data, pos + 4)[0]
            add("btf.ext", f"{part} sec_off", pos, 4, ids[2:])
            add("btf.ext", f"{part} count", pos + 4, 4)
            pos += 8
            for n in range(count):
                for word in range(rec_size // 4):   # insn_off, then type ids or string offsets
                    add("btf.ext", f"{part} record {n} word {word}", pos + rec_size * n + 4 * word, 4,
                        ids + (7, 9, size, 1 << 31))
            pos += count * rec_size


# --- mutations ----------------------------------------------------------------------------------
def interesting(rnd: random.Random, field: Field, original: int, file_size: int) -> int:
    top = 1 << (8 * field.size)
    if field.hints and rnd.random() < 0.5:
        return rnd.choice(field.hints) % top
    value = rnd.choice([0, 1, 2, 3, 4, 7, 8, 16, 0x7F, 0x80, 0xFF, top // 2 - 1, top // 2, top - 1,
                        original + 1, original - 1, original + 8, original - 8, original * 2,
                        original ^ (top // 2), file_size, file_size - 1, file_size + 1,
                        rnd.randrange(64), rnd.randrange(top)])
    return value % top


def set_field(rnd: random.Random, data: bytearray, body: Anatomy) -> str:
    field = rnd.choice(rnd.choice(list(body.fields.values())))
    if field.offset + field.size > len(data):
        return f"{field.area}: {field.what} (cut off)"
    fmt = _UNSIGNED[field.size]
    original = struct.unpack_from(fmt, data, field.offset)[0]
    value = interesting(rnd, field, original, len(data))
    struct.pack_into(fmt, data, field.offset, value)
    return f"{field.area}: {field.what} {original:#x} -> {value:#x}"


def corrupt_string(rnd: random.Random, data: bytearray, body: Anatomy) -> str:
    table, start, end = rnd.choice(body.strings)
    if end <= start or end > len(data):
        return f"string: {table} (empty)"
    pos = rnd.randrange(start, end)
    nuls = [i for i in range(start, end) if data[i] == 0]
    how = rnd.choice(["unterminate", "non-utf8", "zero"])
    if how == "unterminate" and nuls:
        pos = nuls[-1] if rnd.random() < 0.5 else rnd.choice(nuls)
        data[pos] = ord("X")
    elif how == "non-utf8":
        data[pos] = rnd.choice([0x80, 0xC3, 0xFF])
    else:
        data[pos] = 0
    return f"string: {table} byte {pos - start} ({how})"


def flip(rnd: random.Random, data: bytearray, body: Anatomy) -> str:
    spots = []
    for _ in range(rnd.randrange(1, 5)):
        pos = rnd.randrange(len(data))
        data[pos] ^= 1 << rnd.randrange(8) if rnd.random() < 0.5 else rnd.randrange(1, 256)
        spots.append(pos)
    return f"flip: bytes {spots}"


def truncate(rnd: random.Random, data: bytearray, body: Anatomy) -> str:
    cut = rnd.randrange(len(data))
    del data[cut:]
    return f"truncate: at {cut}"


MUTATIONS = [(set_field, 12), (corrupt_string, 3), (flip, 3), (truncate, 1)]


def mutant(seeds: dict[str, tuple[bytes, Anatomy]], case: int) -> tuple[str, bytes, list[str]]:
    """Case `case`: (its seed, its bytes, what was done), the same on every run."""
    rnd = random.Random(f"malformed-{case}")
    name = rnd.choice(sorted(seeds))
    original, body = seeds[name]
    data = bytearray(original)
    done = []
    for _ in range(rnd.choice([1, 1, 1, 2, 2, 3])):
        if not data:
            break
        op = rnd.choices([m for m, _ in MUTATIONS], [w for _, w in MUTATIONS])[0]
        done.append(op(rnd, data, body))
    return name, bytes(data), done


# --- the worker: one process runs a batch of files through the API ------------------------------
def classify(exc: BaseException) -> str:
    """A named error's family and class; anything else is a bug, with its traceback."""
    from pybpf_uring.errors import LoadError, ObjectError
    if isinstance(exc, ObjectError):
        return f"ObjectError/{type(exc).__name__}"
    if isinstance(exc, LoadError):
        return f"LoadError/{type(exc).__name__}"
    return "BUG " + "".join(traceback.format_exception(exc)).strip()


def map_bytes(obj) -> int:
    """What the kernel would allocate for the object's maps, roughly: the fuzzer must not ask it
    for gigabytes on a shared machine (what happens then is a LoadError or a slow success)."""
    return sum((m.key_size + m.value_size + 64) * max(m.max_entries, 1) * (4 if "percpu" in m.type_name else 1)
               for m in obj.maps)


def run_case(path: str, load: bool) -> dict:
    from pybpf_uring.bpf.disasm import disassemble
    from pybpf_uring.bpf.objfile import BpfObject, read_elf
    out = {"file": path}
    start = time.monotonic()
    try:
        disassemble(read_elf(path), path, relocations=True)
        out["elf"] = "ok"
    except Exception as exc:  # noqa: BLE001 - what the case is about
        out["elf"] = classify(exc)
    try:   # "object": the read alone, what `verify` starts with; "read": all the rest too
        obj = BpfObject.read(path)
        out["object"] = "ok"
        obj.disasm()
        obj.disasm(relocations=True, source=True)
        obj.kernel_btf()
        obj._repr_html_()
        for prog in obj.programs:
            prog.linked().disasm(source=True)
        out["read"] = "ok"
    except Exception as exc:  # noqa: BLE001
        out["read"] = classify(exc)
        out.setdefault("object", out["read"])
    if load and out["read"] == "ok":
        if map_bytes(obj) > MAP_BUDGET:
            out["load"] = "skipped: maps too large"
        else:
            try:
                with obj.load():
                    pass
                out["load"] = "ok"
            except Exception as exc:  # noqa: BLE001
                out["load"] = classify(exc)
    out["seconds"] = round(time.monotonic() - start, 3)
    return out


def worker(argv: list[str]) -> None:
    load = argv[:1] == ["--load"]
    for path in argv[load:]:
        print(json.dumps(run_case(path, load)), flush=True)


# --- the driver: batches, with aborts and hangs pinned on their case ---------------------------
def run_api(files: list[str], load: bool) -> dict[str, dict]:
    """Each file's outcome; a case whose process died or hung is an "ABORT"/"HANG" outcome."""
    results: dict[str, dict] = {}
    todo = list(files)
    while todo:
        batch, todo = todo[:BATCH], todo[BATCH:]
        args = [sys.executable, __file__, *(["--load"] if load else []), *batch]
        try:
            run = subprocess.run(args, capture_output=True, text=True,
                                 timeout=CASE_SECONDS * (1 + len(batch) // 10))
            stdout, died = run.stdout, run.returncode != 0 and f"exit {run.returncode}: {run.stderr[-2000:]}"
        except subprocess.TimeoutExpired as exc:
            stdout = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            died = "HANG"
        for line in stdout.splitlines():
            if line.startswith("{"):
                case = json.loads(line)
                results[case["file"]] = case
        rest = [f for f in batch if f not in results]
        if rest and not died:
            died = "exit 0 without reporting every case"
        if rest:   # the first unreported case stopped the batch: run it alone, then the others
            culprit = rest.pop(0)
            results[culprit] = run_alone(culprit, load, died)
            todo = rest + todo
    return results


def run_alone(path: str, load: bool, why: str) -> dict:
    """The case a batch died on, alone; if it dies again while loading, the reading stages run
    without the load, so the outcome names the stage that hung or aborted."""
    args = [sys.executable, __file__, *(["--load"] if load else []), path]
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=3 * CASE_SECONDS)
        if run.returncode == 0 and run.stdout.startswith("{"):
            case = json.loads(run.stdout)
            case["batch"] = why   # it passed alone: the batch died of something else
            return case
        died = f"ABORT exit {run.returncode}: {run.stderr[-2000:]}"
    except subprocess.TimeoutExpired:
        died = "HANG"
    if load:
        case = run_alone(path, False, why)
        if not case["read"].startswith(("ABORT", "HANG")):
            return {**case, "load": died}
    return {"file": path, "elf": died, "object": died, "read": died, "seconds": 3 * CASE_SECONDS}


def cli_failures(command: list[str], files: list[str], rule) -> list[tuple[str, str]]:
    """Files on which `pybpf-uring COMMAND FILES` breaks `rule(run, files)` (which says why or
    returns ""), found by halving a batch that breaks it."""
    args = [sys.executable, "-m", "pybpf_uring", *command, *files]
    try:
        run = subprocess.run(args, capture_output=True, text=True,
                             timeout=CASE_SECONDS * (1 + len(files) // 10))
        why = rule(run, files)
    except subprocess.TimeoutExpired:
        why = "HANG"
    if not why:
        return []
    if len(files) == 1:
        return [(files[0], why)]
    half = len(files) // 2
    return cli_failures(command, files[:half], rule) + cli_failures(command, files[half:], rule)


def cli_rule(expected_errors: dict[str, bool]):
    """The CLI's contract: exit 0 or 1, no traceback or internal error, and `FILE: error: ...`
    for exactly the files the API rejected with an ObjectError (None: either is fine)."""
    def rule(run: subprocess.CompletedProcess, files: list[str]) -> str:
        if run.returncode not in (0, 1):
            return f"exit {run.returncode}: {run.stderr[-2000:]}"
        if "Traceback" in run.stderr or "internal error" in run.stderr:
            return run.stderr[-2000:]
        named = {f for f in files if re.search(rf"^{re.escape(f)}: error: ", run.stderr, re.M)}
        for f in files:
            want = expected_errors.get(f)
            if want is not None and want != (f in named):
                return f"{f}: {'no' if want else 'an'} `FILE: error:` line; stderr: {run.stderr[-1000:]}"
        return ""
    return rule


# --- the tests ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, tuple[bytes, Anatomy]]:
    objects = sample_seeds()
    objects.update(clang_seeds(tmp_path_factory.mktemp("seeds")))
    return {name: (data, anatomy(data)) for name, data in objects.items()}


@pytest.fixture(scope="module")
def mutants(seeds, tmp_path_factory) -> dict[str, tuple[str, list[str]]]:
    """CASES mutants written to files: path -> (seed, what was done)."""
    out_dir = tmp_path_factory.mktemp("mutants")
    made = {}
    for case in range(CASES):
        name, data, done = mutant(seeds, case)
        path = out_dir / f"case{case:05d}.o"
        path.write_bytes(data)
        made[str(path)] = (name, done)
    return made


@pytest.fixture(scope="module")
def api_results(mutants) -> dict[str, dict]:
    return run_api(sorted(mutants), load=False)


def failures(results: dict[str, dict], mutants, stages) -> list[str]:
    bad = []
    for path, case in sorted(results.items()):
        for stage in stages:
            outcome = case.get(stage, "")
            if outcome.startswith(("BUG", "ABORT", "HANG")) or case["seconds"] > CASE_SECONDS:
                seed, done = mutants.get(path, ("?", []))
                bad.append(f"{Path(path).name} (seed {seed}; {'; '.join(done)}) {stage}: {outcome} "
                           f"[{case['seconds']} s]")
    return bad


def summary(results: dict[str, dict], stage: str) -> Counter:
    return Counter(case.get(stage, "").split(":")[0] for case in results.values())


def test_mutants_read_or_fail_with_an_object_error(api_results, mutants):
    assert len(api_results) == len(mutants)
    bad = failures(api_results, mutants, ("elf", "object", "read"))
    assert not bad, "\n".join(bad)
    read = summary(api_results, "read")
    # the mutations reach the checks, and also leave objects that still read
    assert read["ok"] > CASES // 10 and read["ObjectError/ObjectError"] > CASES // 10, read


def test_cli_disasm_names_the_file_or_prints(api_results, mutants):
    expected = {path: case["elf"] != "ok" for path, case in api_results.items()}
    bad = []
    files = sorted(mutants)
    for at in range(0, len(files), BATCH):
        bad += cli_failures(["disasm", "-r"], files[at:at + BATCH], cli_rule(expected))
    assert not bad, "\n".join(f"{Path(f).name} ({mutants[f][0]}; {'; '.join(mutants[f][1])}): {why}"
                              for f, why in bad)


def loadable(api_results, mutants) -> list[str]:
    return [path for path, case in sorted(api_results.items())
            if case["read"] == "ok" and mutants[path][0] not in SLOW_TO_VERIFY]


@pytest.mark.kernel("bpf", "syscall_programs")
def test_mutants_load_or_fail_with_a_load_error(api_results, mutants):
    readable = loadable(api_results, mutants)
    loaded = run_api(readable, load=True)
    bad = failures(loaded, mutants, ("load",))
    assert not bad, "\n".join(bad)
    outcomes = summary(loaded, "load")
    assert sum(n for k, n in outcomes.items() if k.startswith("LoadError")) > 0, outcomes


@pytest.mark.kernel("bpf", "syscall_programs")
def test_cli_verify_names_the_file_or_verifies(api_results, mutants):
    """Every mutant BpfObject.read refuses must be named; of the others, those whose maps fit
    MAP_BUDGET are verified (verify creates them)."""
    from pybpf_uring.bpf.objfile import BpfObject
    expected = {path: True for path, case in api_results.items() if case["object"] != "ok"}
    files = sorted(expected) + [path for path in loadable(api_results, mutants)
                                if map_bytes(BpfObject.read(path)) <= MAP_BUDGET]
    bad = []
    for at in range(0, len(files), BATCH):
        bad += cli_failures(["verify"], files[at:at + BATCH], cli_rule(expected))
    assert not bad, "\n".join(f"{Path(f).name}: {why}" for f, why in bad)


# --- regressions: one case per defect the campaign found ----------------------------------------
REGRESSIONS = [   # (object in tests/data/malformed, how it was made and what it did, the error now)
    ("btf_array_loop.o",
     "samples/packet_stats.py (v3) with BTF type 6, an array, made its own element type and the "
     "maps' value pointer (type 10) aimed at it: reading the map's value size recursed until "
     "RecursionError",
     "corrupt BTF: type 6 (array '') is part of a reference loop (types 6), which the kernel refuses"),
    ("btf_pointer_loop.o",
     "packet_stats.py with the maps' key pointer (type 7) pointing at itself: the object read, and "
     "its Jupyter view recursed spelling the key's type until RecursionError",
     "corrupt BTF: type 7 (ptr '') is part of a reference loop (types 7), which the kernel refuses"),
    ("bss_beyond_u32.o",
     "samples/mainline_nops.py with .bss made 2**32 + 8 bytes: read as a map whose value_size "
     "BPF_MAP_CREATE's u32 cannot hold (ctypes would have cut it to 8)",
     "map '.bss': value_size 4294967304 does not fit the kernel's 32-bit field (at most 4294967295)"),
]
LOAD_REGRESSIONS = [
    ("map_refused.o",
     "packet_stats.py with the array map's key pointer aimed at u64: the kernel's EINVAL left "
     "obj.load() as an OSError",
     "cannot create map 'sizes': BPF_MAP_CREATE failed: EINVAL"),
]


@pytest.mark.parametrize("name, made, message", REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_regression_read(name, made, message):
    from pybpf_uring.bpf.objfile import BpfObject
    from pybpf_uring.errors import ObjectError
    path = MALFORMED / name
    with pytest.raises(ObjectError) as exc:
        BpfObject.read(path)
    assert exc.value.message == message and exc.value.path == str(path)
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "disasm", "-S", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (1, "", f"{path}: error: {message}\n")


@pytest.mark.kernel("bpf", "syscall_programs")
@pytest.mark.parametrize("name, made, message", LOAD_REGRESSIONS, ids=[r[0] for r in LOAD_REGRESSIONS])
def test_regression_load(name, made, message):
    from pybpf_uring.bpf.objfile import BpfObject
    from pybpf_uring.errors import LoadError
    obj = BpfObject.read(MALFORMED / name)
    with pytest.raises(LoadError, match=re.escape(message)):
        obj.load()
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "verify", str(MALFORMED / name)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith(f"{MALFORMED / name}: error: {message}") and "Traceback" not in run.stderr


@pytest.mark.kernel("bpf", "syscall_programs")
def test_regression_btf_the_kernel_cannot_take_is_left_out():
    """packet_stats.py with `.maps` made an 8 GiB SHT_NOBITS section: its DATASEC cannot say that
    size, so the object's BTF cannot be loaded -- which load() let escape as an ObjectError,
    though BTF only improves logs and map printing.  The object loads without it."""
    from pybpf_uring.bpf.objfile import BpfObject
    from pybpf_uring.errors import ObjectError
    obj = BpfObject.read(MALFORMED / "datasec_beyond_u32.o")
    message = ("BTF the kernel cannot take: section '.maps' is 8589934592 bytes, more than its "
               "DATASEC's 32-bit size can say")
    with pytest.raises(ObjectError) as exc:
        obj.kernel_btf()
    assert exc.value.message == message
    with obj.load() as live:
        assert live.btf_error == f"the object's BTF was not loaded: {message}"
        assert live.programs["stats"].fd >= 0 and live.maps["sizes"].info().max_entries == 8
    run = subprocess.run([sys.executable, "-m", "pybpf_uring", "verify",
                          str(MALFORMED / "datasec_beyond_u32.o")], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, "stats: verified\n", "")


def test_btf_chains_the_kernel_accepts_are_walked_to_their_end():
    """The kernel takes a function prototype whose parameter points back at it, and a chain of
    arrays as long as the type table; `type_name` and `size_of` recursed on both until
    RecursionError.  A loop of pointers it refuses, and so does the reader."""
    from pybpf_uring.bpf import btf as btfmod
    proto = btfmod.parse_btf(btfmod.encode_btf(
        [btfmod.Void(), btfmod.Ptr(2), btfmod.FuncProto(0, (btfmod.Param("self", 1),))]))
    spelt = proto.type_name(1)
    assert spelt.startswith("void (*)(void (*)(") and "..." in spelt and len(spelt) < 400
    chain = [btfmod.Void(), btfmod.Int("char", 1, 8)] + [btfmod.Array(i, 1, 1) for i in range(1, 3001)]
    arrays = btfmod.parse_btf(btfmod.encode_btf(chain))
    assert arrays.size_of(3001) == 1
    assert arrays.type_name(3001) == "..." + "[1]" * btfmod.TYPE_NAME_DEPTH
    with pytest.raises(btfmod.BtfError, match=r"type 1 \(ptr ''\) is part of a reference loop \(types 1, 2\)"):
        btfmod.parse_btf(btfmod.encode_btf([btfmod.Void(), btfmod.Ptr(2), btfmod.Const(1)]))


@pytest.mark.kernel
def test_the_kernel_agrees_on_btf_loops():
    """What the reader refuses as a loop the kernel refuses; what it walks, the kernel loads."""
    from pybpf_uring.bpf import btf as btfmod
    from pybpf_uring.bpf import kernel
    fd = kernel.btf_load(btfmod.encode_btf(
        [btfmod.Void(), btfmod.Ptr(2), btfmod.FuncProto(0, (btfmod.Param("self", 1),))]))
    kernel.close(fd)
    with pytest.raises(OSError, match="Loop detected"):
        kernel.btf_load(btfmod.encode_btf([btfmod.Void(), btfmod.Ptr(2), btfmod.Const(1)]))


def test_many_functions_read_and_link_in_linear_time():
    """20,000 functions, each with a relocation, and a program calling all of them: the reader
    matched every relocation against every function and the linker scanned every function per
    call (68 s to read, 200 s more to link); now about two seconds for both."""
    from pybpf_uring.bpf.objfile import BpfObject
    n = 20_000
    start = time.monotonic()
    obj = BpfObject.read(many_functions(n))
    linked = obj.program("prog").linked()
    assert time.monotonic() - start < CASE_SECONDS
    assert len(obj.subprograms) == n and obj.subprograms[-1].relocations[0].symbol == ".data"
    assert linked.slot_count == n + 2 + 4 * n
    calls = [r for r in linked.relocations if r.kind == "call"]
    assert [r.symbol for r in calls[:2]] == ["f0", "f1"] and calls[-1].target == n + 2 + 4 * (n - 1)


def many_functions(n: int) -> bytes:
    """A relocatable EM_BPF object: `n` .text functions, each `r1 = &.data; r0 = 0; exit` with
    its relocation, and a socket program `prog` calling every one of them, written by hand."""
    names = bytearray(b"\0")

    def name(text: str) -> int:
        names.extend(text.encode() + b"\0")
        return len(names) - len(text) - 1

    def insns(*slots) -> bytes:
        return b"".join(struct.pack("<BBhi", *slot) for slot in slots)

    def symbol(name_off: int, info: int, section: int, value: int, size: int) -> bytes:
        return struct.pack("<IBBHQQ", name_off, info, 0, section, value, size)

    # null, .strtab, .text, .data, .rel.text, .symtab, socket, .relsocket
    text = insns((0x18, 1, 0, 0), (0, 0, 0, 0), (0xB7, 0, 0, 0), (0x95, 0, 0, 0)) * n
    prog = insns(*[(0x85, 0x10, 0, -1)] * n, (0xB7, 0, 0, 0), (0x95, 0, 0, 0))
    symbols = [bytes(24), symbol(0, 3, 3, 0, 0)]   # the null symbol, .data's section symbol
    symbols += [symbol(name(f"f{i}"), 0x12, 2, 32 * i, 32) for i in range(n)]
    symbols.append(symbol(name("prog"), 0x12, 6, 0, len(prog)))
    bodies = {".text": text, ".data": bytes(8),
              ".rel.text": b"".join(struct.pack("<QQ", 32 * i, 1 << 32 | 1) for i in range(n)),
              ".symtab": b"".join(symbols), "socket": prog,
              ".relsocket": b"".join(struct.pack("<QQ", 8 * i, (2 + i) << 32 | 10) for i in range(n))}
    layout = [(".strtab", 3, 0, 0, 0, 0), (".text", 1, 6, 0, 0, 0), (".data", 1, 3, 0, 0, 0),
              (".rel.text", 9, 0, 5, 2, 16), (".symtab", 2, 0, 1, 2, 24), ("socket", 1, 6, 0, 0, 0),
              (".relsocket", 9, 0, 5, 6, 16)]
    headers = [bytes(64)]
    out = bytearray(64)
    offsets = {sec[0]: name(sec[0]) for sec in layout}
    bodies[".strtab"] = bytes(names)
    for sec, sh_type, flags, link, info, entsize in layout:
        body = bodies[sec]
        headers.append(struct.pack("<IIQQQQIIQQ", offsets[sec], sh_type, flags, 0, len(out), len(body),
                                   link, info, 8, entsize))
        out += body
    shoff = len(out)
    out += b"".join(headers)
    struct.pack_into("<4sBBBB8xHHIQQQIHHHHHH", out, 0, b"\x7fELF", 2, 1, 1, 0, 1, 247, 1, 0, 0,
                     shoff, 0, 64, 0, 0, 64, len(headers), 1)
    return bytes(out)


if __name__ == "__main__":
    worker(sys.argv[1:])
