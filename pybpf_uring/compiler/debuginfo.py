"""Debug metadata in the shape clang emits for BPF, which is all LLVM needs to write `.BTF`
(types of programs, structs and maps) and `.BTF.ext` (function and line info).

Types are named for the kernel's tools: each DSL integer is a typedef (`u32`) of the C base
type (`unsigned int`), structs keep their Python names and layout, and a map is libbpf's
anonymous struct of `type`, `max_entries`, `key` and `value` pointers.
"""
from __future__ import annotations

import os

import llvmlite.ir as ir

from .typesys import ArrayT, BoolT, IntT, MapT, PtrT, StructT, Type

C_NAMES = {(8, False): "unsigned char", (8, True): "signed char", (16, False): "unsigned short",
           (16, True): "short", (32, False): "unsigned int", (32, True): "int",
           (64, False): "unsigned long long", (64, True): "long long"}


class DebugInfo:
    def __init__(self, module: ir.Module, sources) -> None:
        """`sources`: the `diagnostics.Source` of the module first (its file is the compile
        unit's), then those the functions were parsed from (a notebook's subprograms come
        from other cells, each its own Source)."""
        self.m = module
        self.files = self.source_files(sources)
        self.file = self.files[_file_key(sources[0])]
        self.cu = self.node("DICompileUnit", distinct=True,
                            language=ir.DIToken("DW_LANG_C11"), file=self.file,
                            producer="pybpf_uring", isOptimized=True, runtimeVersion=0,
                            emissionKind=ir.DIToken("FullDebug"), nameTableKind=ir.DIToken("None"))
        self.m.add_named_metadata("llvm.dbg.cu", self.cu)
        for behaviour, key, value in ((7, "Dwarf Version", 5), (2, "Debug Info Version", 3)):
            self.m.add_named_metadata("llvm.module.flags",
                                      [ir.Constant(ir.IntType(32), behaviour), key,
                                       ir.Constant(ir.IntType(32), value)])
        self.types: dict[object, ir.DIValue] = {}
        self.scopes: dict[str, ir.DIValue] = {}
        self.locations: dict[tuple, ir.DIValue] = {}
        self.pending: list[tuple] = []  # (subprogram, file, line, params, its type or None)

    def node(self, kind: str, distinct: bool = False, **operands) -> ir.DIValue:
        return self.m.add_debug_info(kind, operands, is_distinct=distinct)

    def source_files(self, sources) -> dict[tuple[str, str], ir.DIValue]:
        """One DIFile per file (a notebook cell is one) the sources come from, keyed by
        `_file_key`.  The text travels inside it: .BTF.ext's line texts come from it, so they
        are right for notebook cells and for files changed since.  Line N of the text is line N
        of the file, filled from every source cut out of it (a cell's functions are parsed one
        by one).  LLVM looks line texts up by file name, so a name that two cells share
        (`%%time` compiles every body as `<timed exec>`) gets the cell's name added."""
        groups: dict[tuple[str, str], list] = {}
        for source in sources:
            group = groups.setdefault(_file_key(source), [])
            if source not in group:
                group.append(source)
        paths = [path for path, _ in groups]
        files = {}
        for (path, cell), group in groups.items():
            directory, name = os.path.split(os.path.abspath(path)) if not path.startswith("<") else ("", path)
            if paths.count(path) > 1:
                name = f"{name} ({cell})"
            files[path, cell] = self.node("DIFile", filename=name, directory=directory, source=_file_text(group))
        return files

    def file_of(self, span) -> ir.DIValue:
        return self.files[_file_key(span.source)]

    # ----- types ----------------------------------------------------------------------
    def type(self, t: Type | None) -> ir.DIValue | None:
        key = id(t) if isinstance(t, StructT) else t
        if key not in self.types:
            self.types[key] = self.make_type(t)
        return self.types[key]

    def make_type(self, t: Type) -> ir.DIValue | None:
        if isinstance(t, IntT):
            base = self.node("DIBasicType", name=C_NAMES[t.bits, t.signed], size=t.bits,
                             encoding=ir.DIToken("DW_ATE_signed" if t.signed else "DW_ATE_unsigned"))
            return self.node("DIDerivedType", tag=ir.DIToken("DW_TAG_typedef"), name=t.name,
                             file=self.file, baseType=base)
        if isinstance(t, BoolT):
            return self.node("DIBasicType", name="_Bool", size=8, encoding=ir.DIToken("DW_ATE_boolean"))
        if isinstance(t, PtrT):
            return self.pointer(self.type(t.target))
        if isinstance(t, ArrayT):
            return self.array(self.type(t.elem), t.length, t.size * 8)
        if isinstance(t, StructT) and not t.fields:  # opaque: the kernel's own type, by name
            return self.node("DICompositeType", tag=ir.DIToken("DW_TAG_structure_type"), name=t.btf_name,
                             file=self.file, flags=ir.DIToken("DIFlagFwdDecl"))
        if isinstance(t, StructT):
            members = [self.member(f.name, self.type(f.type), f.type.size * 8, f.offset * 8, f.line or t.line)
                       for f in t.fields]
            return self.node("DICompositeType", tag=ir.DIToken("DW_TAG_structure_type"), name=t.btf_name,
                             file=self.file, line=t.line, size=t.size * 8, elements=self.m.add_metadata(members))
        return None

    def pointer(self, target: ir.DIValue | None) -> ir.DIValue:
        return self.node("DIDerivedType", tag=ir.DIToken("DW_TAG_pointer_type"), baseType=target, size=64)

    def array(self, elem: ir.DIValue, count: int, bits: int) -> ir.DIValue:
        sub = self.node("DISubrange", count=count)
        return self.node("DICompositeType", tag=ir.DIToken("DW_TAG_array_type"), baseType=elem,
                         size=bits, elements=self.m.add_metadata([sub]))

    def member(self, name: str, t: ir.DIValue, bits: int, offset: int, line: int) -> ir.DIValue:
        return self.node("DIDerivedType", tag=ir.DIToken("DW_TAG_member"), name=name, file=self.file,
                         line=line, baseType=t, size=bits, offset=offset)

    # ----- program entities -----------------------------------------------------------
    def map_variable(self, gv: ir.GlobalVariable, name: str, mt: MapT, line: int) -> None:
        """libbpf reads a map's definition from the BTF of this struct, never from its bytes."""
        int_t = self.node("DIBasicType", name="int", size=32, encoding=ir.DIToken("DW_ATE_signed"))

        def number(n: int) -> ir.DIValue:  # `int (*name)[n]`: the value lives in the array size
            return self.pointer(self.array(int_t, n, 32 * n))

        fields = [("type", number(mt.map_type)), ("max_entries", number(mt.max_entries))]
        if mt.keyed:  # a ring buffer has neither: libbpf's `__uint(type, ...); __uint(max_entries, ...)`
            fields += [("key", self.pointer(self.type(mt.key))), ("value", self.pointer(self.type(mt.value)))]
        members = [self.member(n, t, 64, 64 * i, line) for i, (n, t) in enumerate(fields)]
        struct = self.node("DICompositeType", tag=ir.DIToken("DW_TAG_structure_type"), file=self.file,
                           line=line, size=64 * len(fields), elements=self.m.add_metadata(members))
        self.variable(gv, name, struct, line)

    def global_variable(self, gv: ir.GlobalVariable, g) -> None:
        t = self.type(g.type)
        if g.const:  # libbpf's `const volatile`: read-only for the program, set by the host
            t = self.node("DIDerivedType", tag=ir.DIToken("DW_TAG_const_type"),
                          baseType=self.node("DIDerivedType", tag=ir.DIToken("DW_TAG_volatile_type"), baseType=t))
        self.variable(gv, g.name, t, g.line)

    def variable(self, gv: ir.GlobalVariable, name: str, t: ir.DIValue, line: int) -> None:
        var = self.node("DIGlobalVariable", distinct=True, name=name, scope=self.cu, file=self.file,
                        line=line, type=t, isLocal=False, isDefinition=True)
        gv.set_metadata("dbg", self.node("DIGlobalVariableExpression", var=var,
                                         expr=self.node("DIExpression")))

    def kfunc(self, fn: ir.Function, k) -> None:
        """A kfunc declaration: BTF records it as an extern FUNC in `.ksyms`, which libbpf
        matches by name against the kernel's BTF."""
        from .builtins import CTX, TYPE_SIZE
        from .typesys import U8, U64
        ctx = self.pointer(self.node("DICompositeType", tag=ir.DIToken("DW_TAG_structure_type"),
                                     name="iou_ctx", file=self.file, flags=ir.DIToken("DIFlagFwdDecl")))
        params = [ctx if p.kind == CTX else self.type(U64 if p.kind == TYPE_SIZE else p.type) for p in k.params]
        ret = self.pointer(self.type(U8)) if k.ret is None else self.type(k.ret)
        sp = self.node("DISubprogram", name=k.symbol, scope=self.file, file=self.file,
                       type=self.node("DISubroutineType", types=self.m.add_metadata([ret] + params)),
                       flags=ir.DIToken("DIFlagPrototyped"), spFlags=ir.DIToken("DISPFlagOptimized"))
        self.pending.append((sp, self.file, 0, list(zip(k.arg_names, params)), None))
        fn.set_metadata("dbg", sp)

    def struct_ops_variable(self, gv: ir.GlobalVariable, info) -> None:
        """`struct io_uring_bpf_ops`, shaped as the kernel's: libbpf finds the kernel type by
        this name and fills the value from the members it knows (loop_step, ring_fd)."""
        from .typesys import U32
        step = self.pointer(self.node("DISubroutineType", types=self.m.add_metadata(
            [self.type(info.ret)] + [self.type(t) for _, t in info.params])))
        void_ptr = self.pointer(None)
        members = [self.member("loop_step", step, 64, 0, info.node.span.line),
                   self.member("ring_fd", self.type(U32), 32, 64, info.node.span.line),
                   self.member("priv", void_ptr, 64, 128, info.node.span.line)]
        ops = self.node("DICompositeType", tag=ir.DIToken("DW_TAG_structure_type"), name="io_uring_bpf_ops",
                        file=self.file, line=info.node.span.line, size=192,
                        elements=self.m.add_metadata(members))
        self.variable(gv, gv.name, ops, info.node.span.line)

    def function(self, fn: ir.Function, info, params) -> None:
        """`params`: the parameters as the kernel passes them (a struct_ops program's u64 array)."""
        ret = None if info.ret.__class__.__name__ == "NoneT" else self.type(info.ret)
        proto = self.node("DISubroutineType",
                          types=self.m.add_metadata([ret] + [self.type(t) for _, t in params]))
        line, file = info.node.span.line, self.file_of(info.node.span)
        sp = self.node("DISubprogram", distinct=True, name=info.name, scope=file, file=file,
                       line=line, scopeLine=line, flags=ir.DIToken("DIFlagPrototyped"),
                       spFlags=ir.DIToken("DISPFlagDefinition | DISPFlagOptimized"
                                           + ("" if info.kind else " | DISPFlagLocalToUnit")),
                       unit=self.cu)
        self.pending.append((sp, file, line, params, proto))
        fn.set_metadata("dbg", sp)
        self.scopes[fn.name] = sp

    def location(self, span, fn: ir.Function) -> ir.DIValue:
        key = (fn.name, span.line, span.col)
        if key not in self.locations:
            self.locations[key] = self.node("DILocation", line=span.line, column=span.col,
                                            scope=self.scopes[fn.name])
        return self.locations[key]

    def finish(self) -> None:
        """Give each subprogram its parameters.  BTF takes parameter names from them (the kernel
        rejects a FUNC with unnamed arguments).  They point back at their subprogram, and
        llvmlite hashes metadata by content, so the cycle is closed last, once no more nodes
        are created.  A program's subprogram gets its type here too: every DILocation names
        it as its scope, and llvmlite hashes a new node's operands all the way down, which
        through the type (the ctx struct, its members' types) took a fifth of lowering."""
        for sp, file, line, params, proto in self.pending:
            nodes = [self.node("DILocalVariable", name=name, arg=i + 1, scope=sp, file=file, line=line,
                               type=t if isinstance(t, ir.DIValue) else self.type(t))
                     for i, (name, t) in enumerate(params)]
            sp.operands += (("retainedNodes", self.m.add_metadata(nodes)),)
            if proto is not None:
                sp.operands += (("type", proto),)


def _file_key(source) -> tuple[str, str]:
    """The file a Source was cut from: its path, and its notebook cell ("" in a file), since
    the cells of a magic share one path."""
    return source.path, source.cell


def _file_text(sources) -> str:
    """The text of one file from the parts of it that were parsed, each at its own lines;
    lines no part covers are empty.  One source starting at line N gives N-1 newlines and
    its text, unchanged."""
    lines: list[str] = []
    for source in sources:
        for i, line in enumerate(source.text.split("\n")):
            n = source.first_line - 1 + i
            lines.extend([""] * (n + 1 - len(lines)))
            if line:
                lines[n] = line
    return "\n".join(lines)
