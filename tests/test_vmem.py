"""vmem.py: the x86_64 page walk (4- and 5-level, 2 MiB and 1 GiB pages, SME mask) on page
tables laid out as arch/x86/include/asm/pgtable_types.h describes them; the real dumps'
walk is tested in test_dmesg.py."""

import struct

import pytest

from caslib.dumps import vmcoreinfo, vmem

PRESENT, PSE = 0x1, 0x80
IMAGE_PHYS = 0x1000000           # where the kernel image lies (phys_base 0 + 16 MiB)


class Phys:
    """Physical memory of sparse 4 KiB pages; reads outside them are not in the dump."""

    core = None

    def __init__(self):
        self.pages = {}

    def write_u64(self, paddr, value):
        page = self.pages.setdefault(paddr >> 12, bytearray(4096))
        struct.pack_into("<Q", page, paddr & 0xFFF, value)

    def read(self, paddr, size):
        page = self.pages.get(paddr >> 12)
        if page is None:
            raise vmem.VmemError(f"physical address {paddr:#x} is not in the dump")
        return bytes(page[paddr & 0xFFF:(paddr & 0xFFF) + size])


def index(vaddr, shift):
    return (vaddr >> shift) & 511


def memory(l5=False, sme=0):
    top = 0xFFFFFFFF82000000
    info = vmcoreinfo.parse((f"SYMBOL(_stext)=ffffffff81000000\nNUMBER(phys_base)=0\n"
                             f"SYMBOL(init_top_pgt)={top:x}\nNUMBER(pgtable_l5_enabled)="
                             f"{int(l5)}\nNUMBER(sme_mask)={sme}\n").encode())
    phys = Phys()
    mem = vmem.KernelMemory(phys, info, "x86_64")
    assert mem.translate(top) == top - 0xFFFFFFFF80000000
    return mem, phys, top - 0xFFFFFFFF80000000


def map_page(phys, pgd, vaddr, target, levels, leaf_shift=12, sme=0, base=0x100000):
    """Build the chain of tables for ``vaddr`` below ``pgd``; the leaf at ``leaf_shift``."""
    table = pgd
    shifts = [48, 39, 30, 21, 12][5 - levels:]
    for n, shift in enumerate(shifts):
        if shift == leaf_shift:
            phys.write_u64(table + index(vaddr, shift) * 8,
                           target | PRESENT | sme | (PSE if shift != 12 else 0))
            return
        nxt = base + n * 0x1000
        phys.write_u64(table + index(vaddr, shift) * 8, nxt | PRESENT | 0x62 | sme)
        phys.pages.setdefault(nxt >> 12, bytearray(4096))
        table = nxt


@pytest.mark.parametrize("l5", [False, True])
@pytest.mark.parametrize("leaf_shift,target", [(12, 0x7654000), (21, 0x40000000),
                                               (30, 0x80000000)])
def test_walk_reaches_pages_of_every_size(l5, leaf_shift, target):
    mem, phys, pgd = memory(l5=l5)
    vaddr = 0xFF11_2233_4455_6000 if l5 else 0xFFFF_8881_2345_6000
    map_page(phys, pgd, vaddr, target, 5 if l5 else 4, leaf_shift)
    offset = 0x1234 & ((1 << leaf_shift) - 1)
    assert mem.translate(vaddr + offset) == target + (vaddr & ((1 << leaf_shift) - 1)) + offset
    phys.pages.setdefault((target + (vaddr & ((1 << leaf_shift) - 1))) >> 12, bytearray(4096))
    assert mem.read(vaddr, 16) == bytes(16)


def test_sme_mask_is_cleared_and_holes_are_errors():
    sme = 1 << 47
    mem, phys, pgd = memory(sme=sme)
    vaddr = 0xFFFF_8880_0010_0000
    map_page(phys, pgd, vaddr, 0x5000, 4, sme=sme)
    assert mem.translate(vaddr) == 0x5000
    with pytest.raises(vmem.VmemError, match="not mapped"):
        mem.translate(0xFFFF_9990_0000_0000)  # no PGD entry
    with pytest.raises(vmem.VmemError):
        mem.read(vaddr, 8)  # mapped, but its page is not in the dump


def test_other_machines_translate_the_image_only():
    info = vmcoreinfo.parse(b"SYMBOL(_stext)=ffff800008010000\nNUMBER(kimage_voffset)="
                            b"0xffff7fff88000000\n")
    mem = vmem.KernelMemory(Phys(), info, "aarch64")
    assert mem.translate(0xFFFF800008010000) == 0xFFFF800008010000 - 0xFFFF7FFF88000000
