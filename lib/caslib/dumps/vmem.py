"""Kernel virtual memory of a dump: physical reads through the dump's own map, page walks.

Why: the kernel log lives at virtual addresses (``SYMBOL(prb)`` in the kernel
image, its buffers possibly in the direct map), and a dump is indexed by
physical address: ELF PT_LOADs by ``p_paddr`` (QEMU ``paging=false`` has no
virtual addresses at all), kdump-compressed dumps by pfn.  ``PhysMemory``
reads physical bytes from either; ``KernelMemory`` turns virtual addresses
into physical ones:

- kernel-image addresses through the image mapping cas-ident uses for
  ``init_uts_ns`` (``utsname.phys_candidates``: x86_64 ``virt -
  __START_KERNEL_map + phys_base``, arm64 ``kimage_voffset``, ...), the
  candidate kept being the one under which ``init_uts_ns`` reads back as the
  dump's own utsname;
- on x86_64, every other address by walking the page tables from
  ``SYMBOL(init_top_pgt)`` (or ``swapper_pg_dir``), 4-level, or 5-level when
  ``NUMBER(pgtable_l5_enabled)=1``, honouring 1 GiB/2 MiB pages and clearing
  ``NUMBER(sme_mask)`` (arch/x86/include/asm/pgtable_types.h);
- on any architecture, addresses an ELF PT_LOAD maps by ``p_vaddr``
  (kdump's /proc/vmcore).

Other architectures' direct maps are not walked: their logs are read when
the buffers lie in the kernel image or in a PT_LOAD with virtual addresses.
Pages are cached (at most ``CACHE_PAGES``), so memory stays bounded whatever
the dump claims.
"""

import bisect
import struct

from caslib.errors import FormatError
from caslib import magic
from caslib.dumps import kdumphdr, utsname

PAGE = 4096
CACHE_PAGES = 2048            # 8 MiB of decoded pages at most
X86_64_PHYS_MASK = ((1 << 52) - 1) & ~0xFFF
X86_64_KERNEL_IMAGE = 1 << 30  # KERNEL_IMAGE_SIZE with KASLR (NUMBER(KERNEL_IMAGE_SIZE) wins)


class VmemError(FormatError):
    """An address the dump does not hold (not mapped, or its page not dumped).

    Kept apart from FormatError because readers catch exactly this to skip an
    unheld address, while a corrupt dump must still stop them."""

    def __init__(self, message: str, kind: str = "unmapped"):
        super().__init__(message, kind)


class PhysMemory:
    """Physical bytes of a dump: ELF PT_LOADs by ``p_paddr``, or kdump pages by pfn."""

    def __init__(self, src, core=None, kdump=None):
        self.src, self.core, self.kdump = src, core, kdump
        self.cache: dict[int, bytes | None] = {}
        if kdump is not None:
            self.page_size = kdump.block_size
            self.pages = kdumphdr.Pages(src, kdump, max_bitmap=None)
        else:
            self.page_size = PAGE
            loads = sorted((s for s in core.loads if s.memsz), key=lambda s: s.paddr)
            self.loads, self.starts = loads, [s.paddr for s in loads]

    def _elf_page(self, pfn: int) -> bytes | None:
        """One page assembled from whatever PT_LOADs cover it (None if none covers any byte)."""
        start, end = pfn * PAGE, (pfn + 1) * PAGE
        out, found = bytearray(PAGE), False
        i = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while i < len(self.loads) and self.loads[i].paddr < end:
            seg = self.loads[i]
            lo, hi = max(start, seg.paddr), min(end, seg.paddr + seg.memsz)
            if lo < hi:
                found = True
                file_hi = min(hi, seg.paddr + seg.filesz)
                if lo < file_hi:
                    data = self.src.read(seg.offset + lo - seg.paddr, file_hi - lo)
                    out[lo - start:lo - start + len(data)] = data
            i += 1
        return bytes(out) if found else None

    def page(self, pfn: int) -> bytes | None:
        if pfn in self.cache:
            return self.cache[pfn]
        data = self.pages.read(pfn) if self.kdump is not None else self._elf_page(pfn)
        if len(self.cache) >= CACHE_PAGES:
            self.cache.pop(next(iter(self.cache)))
        self.cache[pfn] = data
        return data

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; VmemError when a page of them is not in the dump."""
        out = bytearray()
        ps = self.page_size
        while size > 0:
            pfn, off = divmod(paddr, ps)
            data = self.page(pfn)
            if data is None:
                raise VmemError(f"physical address {paddr:#x} is not in the dump")
            n = min(size, ps - off)
            out += data[off:off + n]
            paddr, size = paddr + n, size - n
        return bytes(out)


class KernelMemory:
    """Reads by kernel virtual address (see the module docstring for the translations)."""

    def __init__(self, phys: PhysMemory, vmci, machine: str | None, sub_phys_base=None):
        self.phys, self.vmci, self.machine = phys, vmci, machine
        self.endian = "<"
        self.image_delta, self.image_how = self._image_mapping(sub_phys_base)
        self.l5 = vmci.number("pgtable_l5_enabled") == 1
        self.sme_mask = vmci.number("sme_mask") or 0
        self.image_size = vmci.number("KERNEL_IMAGE_SIZE") or X86_64_KERNEL_IMAGE
        self.pgd = None
        self.tlb: dict[int, int] = {}

    def _image_mapping(self, sub_phys_base):
        """(paddr - vaddr, how) for the kernel image, checked against init_uts_ns."""
        sym = self.vmci.symbol("init_uts_ns")
        probe = sym if sym is not None else self.vmci.symbol("_stext")
        if probe is None:
            return None, None
        offs = [a - sym for a, _ in utsname.addresses(self.vmci)] if sym is not None else [0]
        candidates = utsname.phys_candidates(self.machine, self.vmci, probe, sub_phys_base)
        for how, pa in candidates:
            if sym is None:
                return pa - probe, how
            for o in offs:
                try:
                    raw = self.phys.read(pa + o, utsname.UTS_SIZE)
                except VmemError:
                    continue
                if utsname.validate(raw, self.vmci.osrelease):
                    return pa - probe, how
        return None, None

    def _in_image(self, vaddr: int) -> bool:
        if self.image_delta is None:
            return False
        if self.machine == "x86_64":
            return utsname.START_KERNEL_MAP <= vaddr < utsname.START_KERNEL_MAP + self.image_size
        return True  # other machines: only the image mapping is known

    def translate(self, vaddr: int) -> int:
        """The physical address of ``vaddr``; VmemError when it cannot be translated."""
        vaddr &= (1 << 64) - 1
        if self.machine == "x86_64":
            if self._in_image(vaddr):
                return vaddr + self.image_delta
            return self._walk_x86_64(vaddr)
        core = self.phys.core
        if core is not None:  # kdump's /proc/vmcore maps the direct map by p_vaddr too
            for s in core.loads:
                if s.vaddr and s.vaddr <= vaddr < s.vaddr + s.memsz:
                    return s.paddr + (vaddr - s.vaddr)
        if self._in_image(vaddr):
            return vaddr + self.image_delta
        raise VmemError(f"cannot translate {vaddr:#x} on {self.machine or 'this machine'}"
                        " (only x86_64 page tables are walked)")

    def _walk_x86_64(self, vaddr: int) -> int:
        page = vaddr >> 12
        if page in self.tlb:
            return self.tlb[page] | (vaddr & 0xFFF)
        if self.pgd is None:
            top = self.vmci.symbol("init_top_pgt") or self.vmci.symbol("swapper_pg_dir")
            if top is None or not self._in_image(top):
                raise VmemError("VMCOREINFO has no usable SYMBOL(init_top_pgt)/swapper_pg_dir:"
                                f" cannot translate {vaddr:#x}")
            self.pgd = top + self.image_delta
        table = self.pgd
        shifts = (48, 39, 30, 21, 12) if self.l5 else (39, 30, 21, 12)
        for shift in shifts:
            entry = struct.unpack("<Q", self.phys.read(table + ((vaddr >> shift) & 511) * 8, 8))[0]
            if not entry & 1:
                raise VmemError(f"virtual address {vaddr:#x} is not mapped (level {shift})")
            entry &= ~self.sme_mask
            if shift in (30, 21) and entry & 0x80:  # a 1 GiB or 2 MiB page
                size = 1 << shift
                pa = (entry & X86_64_PHYS_MASK & ~(size - 1)) | (vaddr & (size - 1))
                break
            table = entry & X86_64_PHYS_MASK
        else:
            pa = table | (vaddr & 0xFFF)
        if len(self.tlb) >= CACHE_PAGES:
            self.tlb.clear()
        self.tlb[page] = pa & ~0xFFF
        return pa

    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at ``vaddr``, page by page (virtually contiguous, not physically)."""
        if size < 0 or size > 64 << 20:
            raise VmemError(f"refusing a {size}-byte read at {vaddr:#x}")
        out = bytearray()
        while size > 0:
            n = min(size, PAGE - (vaddr & (PAGE - 1)))
            out += self.phys.read(self.translate(vaddr), n)
            vaddr, size = vaddr + n, size - n
        return bytes(out)

    def u64(self, vaddr: int) -> int:
        return struct.unpack(self.endian + "Q", self.read(vaddr, 8))[0]


def open_memory(src, head: bytes | None = None):
    """(KernelMemory, VmcoreInfo, facts) for an opened dump source (ELF or kdump)."""
    from caslib.dumps import elfcore, vmcoreinfo
    head = head if head is not None else src.read(0, 8)
    if head[:4] == magic.ELF:
        core = elfcore.read_elf(src)
        note = core.note("VMCOREINFO")
        vmci = vmcoreinfo.parse(note.desc) if note else vmcoreinfo.VmcoreInfo()
        phys, machine, sub_base = PhysMemory(src, core=core), core.machine, None
        endian, bits = core.endian, core.elfclass
    elif head[:8] in kdumphdr.SIGNATURES:
        hdr = kdumphdr.read_header(src)
        if hdr.format != "kdump":
            raise FormatError("a diskdump file has no page descriptors to read memory from",
                            "unsupported")
        raw = hdr.vmcoreinfo
        if not raw and hdr.notes:
            raw = next((n.desc for n in elfcore.parse_notes(hdr.notes, hdr.endian)
                        if n.name == "VMCOREINFO"), b"")
        vmci = vmcoreinfo.parse(raw)
        machine = hdr.utsname.get("machine")
        phys, sub_base, endian, bits = PhysMemory(src, kdump=hdr), hdr.sub.get("phys_base"), \
            hdr.endian, hdr.bits
    else:
        raise FormatError("not an ELF or kdump-compressed dump", "not-a-dump")
    if not vmci:
        raise FormatError("the dump carries no VMCOREINFO: its kernel left no symbols to find"
                        " the log with", "no-vmcoreinfo")
    if machine is None and vmci.symbol("init_top_pgt") is not None:
        machine = "x86_64"
    mem = KernelMemory(phys, vmci, machine, sub_base)
    mem.endian = endian
    mem.bits = bits
    if mem.image_delta is None:
        why = "init_uts_ns does not read back under any known phys_base"
        if phys.core is not None:
            try:
                phys.core.check_extent(src.size)
            except FormatError as exc:
                raise FormatError(f"cannot map the kernel image: {exc}", exc.kind) from None
        raise FormatError(f"cannot map the kernel image: {why}", "unmapped")
    return mem, vmci, {"machine": machine, "image_mapping": mem.image_how}
