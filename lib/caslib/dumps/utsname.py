"""The crashed kernel's own ``init_uts_ns``, read from dump memory with one small read.

Why: the hostname and the utsname version live only in kernel memory (the
kdump header copies them, QEMU's does not; ELF dumps never have them).
VMCOREINFO gives ``SYMBOL(init_uts_ns)`` and ``OFFSET(uts_namespace.name)``;
the symbol is a virtual address, so it is read through the PT_LOAD whose
``p_vaddr`` covers it, or, when PT_LOADs carry physical addresses only (QEMU
``paging=false``) and in kdump-compressed dumps (pages by pfn), through a
physical address from the architecture's kernel-image mapping (x86_64:
``virt - __START_KERNEL_map + phys_base``, arch/x86/include/asm/page_64.h).
Every guess must read back as a utsname whose sysname is ``Linux`` and whose
release is VMCOREINFO's OSRELEASE, so a wrong guess is never reported.
"""

import re

from caslib.dumps import kdumphdr

UTS_SIZE = 6 * 65
_RELEASE = re.compile(r"^[0-9]+\.[0-9]+[\x21-\x7e]{0,62}$")
START_KERNEL_MAP = 0xFFFFFFFF80000000
X86_64_DIRECT_MAP = 0xFFFF888000000000


def validate(raw: bytes, release: str | None) -> dict | None:
    """The parsed utsname if ``raw`` looks like the kernel's own, else None."""
    if len(raw) < UTS_SIZE or raw[:6] != b"Linux\0":
        return None
    uts = kdumphdr.parse_utsname(raw)
    if not uts["release"] or not _RELEASE.match(uts["release"]):
        return None
    if release and uts["release"] != release:
        return None
    return uts


def phys_candidates(machine: str | None, vmci, virt: int, sub_phys_base=None):
    """(how, physical address) guesses for a kernel-image virtual address, best first.

    Each guess is only used if the bytes there validate as a utsname.
    """
    out = []
    if machine == "x86_64":
        if virt >= START_KERNEL_MAP:
            # arch/x86/include/asm/page_64.h __phys_addr_symbol: x - __START_KERNEL_map + phys_base
            # without NUMBER(phys_base): a kernel loaded at LOAD_PHYSICAL_ADDR has
            # phys_base = -KERNELOFFSET (only the virtual address was randomised)
            koff = vmci.kerneloffset
            bases = [("NUMBER(phys_base)", vmci.number("phys_base")),
                     ("sub-header phys_base", sub_phys_base),
                     ("-KERNELOFFSET", -koff if koff is not None else None), ("phys_base 0", 0)]
            seen = set()
            for how, base in bases:
                if base is not None and base not in seen:
                    seen.add(base)
                    out.append((f"virt - __START_KERNEL_map + {how}",
                                virt - START_KERNEL_MAP + base))
        elif virt >= X86_64_DIRECT_MAP:
            out.append(("virt - page_offset_base (unrandomised)", virt - X86_64_DIRECT_MAP))
    elif machine == "aarch64":
        # arch/arm64/kernel/vmcore_info.c prints it as hex: NUMBER(kimage_voffset)=0x...
        voff = vmci.hex("NUMBER(kimage_voffset)")
        if voff is not None:
            out.append(("virt - NUMBER(kimage_voffset)", virt - voff))
    elif machine in ("i386", "i686"):
        out.append(("virt - PAGE_OFFSET 0xc0000000", virt - 0xC0000000))
    elif machine in ("ppc64", "ppc64le") and virt >= 0xC000000000000000:
        out.append(("virt - 0xc000000000000000", virt - 0xC000000000000000))
    elif machine == "riscv64":
        off = vmci.hex("NUMBER(va_kernel_pa_offset)")
        if off is not None:
            out.append(("virt - NUMBER(va_kernel_pa_offset)", virt - off))
    out.append(("identity", virt))
    return [(how, pa) for how, pa in out if pa >= 0]


def addresses(vmci) -> list:
    """(virtual address, how) of init_uts_ns.name, from VMCOREINFO; [] without the symbol."""
    sym = vmci.symbol("init_uts_ns")
    if sym is None:
        return []
    off = vmci.offset("uts_namespace.name")
    # kernels before 5.11 start uts_namespace with a 4-byte kref; later ones with the name
    offsets = [off] if off is not None else [0, 4]
    return [(sym + o, f"SYMBOL(init_uts_ns)+{o}") for o in offsets]


def from_elf(src, core, vmci, release, machine):
    """(utsname dict, how it was found) from an ELF dump's PT_LOADs, or (None, None)."""
    for addr, where in addresses(vmci):
        off = core.offset_of_vaddr(addr, UTS_SIZE)
        if off is not None:
            uts = validate(src.read(off, UTS_SIZE), release)
            if uts:
                return uts, f"{where} via PT_LOAD p_vaddr"
        for how, pa in phys_candidates(machine, vmci, addr):
            off = core.offset_of_paddr(pa, UTS_SIZE)
            if off is not None:
                uts = validate(src.read(off, UTS_SIZE), release)
                if uts:
                    return uts, f"{where} via PT_LOAD p_paddr ({how})"
    return None, None


def from_kdump(src, hdr, vmci, release, machine):
    """(utsname dict, how it was found) through a kdump dump's page descriptors, or (None, None)."""
    bs = hdr.block_size
    for addr, where in addresses(vmci):
        for how, pa in phys_candidates(machine, vmci, addr, hdr.sub.get("phys_base")):
            first = kdumphdr.read_page(src, hdr, pa // bs)
            if first is None:
                continue
            raw = first[pa % bs:]
            if len(raw) < UTS_SIZE:
                second = kdumphdr.read_page(src, hdr, pa // bs + 1)
                if second is None:
                    continue
                raw += second
            uts = validate(raw[:UTS_SIZE], release)
            if uts:
                return uts, f"{where} via page descriptor ({how})"
    return None, None
