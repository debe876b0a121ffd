/*
 * A fake uncompressed Linux kernel for testing the firmware's PVH path (and
 * any loader of the PVH boot ABI, such as a VMM's direct boot): an ELF file
 * whose one loadable segment holds 32-bit code at 0x100000 and whose
 * XEN_ELFNOTE_PHYS32_ENTRY note names its first byte, like a vmlinux with
 * CONFIG_PVH. Instead of booting it checks the entry state and struct
 * hvm_start_info and reports on the 8250 UART at 0x3f8:
 *
 *   stub: pvh entry ebx=0x00007000 eip=0x00100000
 *   stub: pvh state ok                 (or: stub: pvh state BAD <what>)
 *   stub: start_info magic=0x336ec578 version=0x00000001 flags=0x00000000 modules=0x00000001 memmap_entries=0x00000002 ok
 *   stub: memmap 0x00000000feffc000 0x0000000000004000 0x02
 *   stub: memmap 0x0000000000000000 0x0000000010000000 0x01
 *   stub: cmdline "<the command line>"
 *   stub: initrd addr=0x... size=0x... head "<its first line>"
 *   stub: mp found=0x0009fc00 table=0x... cpus=0x02 bsp=0x00 ioapic=0x02 intsrc=0x17 lint=0x02 irq0pin=0x02
 *   stub: mp checksums ok              (or BAD)
 *   stub: result PASS                  (or: stub: result FAIL)
 *
 * The initrd line describes module 0, all zeros without one. Then it ends
 * the VM as the bzImage test kernel does (stub_finish in stub-common.S).
 *
 * The entry state checked is the one Xen's docs/misc/pvh.pandoc asks for,
 * as far as Linux relies on it (arch/x86/platform/pvh/head.S): %ebx the
 * start info; CS a present flat 32-bit code segment, DS and ES present flat
 * writable data segments, all in the GDT (base 0, limit 4 GiB, granularity
 * 4 KiB, 32-bit); protection on, paging off, CR4 0, IF clear. The selector
 * values are the loader's choice; the TSS the document also asks for is
 * not checked (Linux never looks at it), and neither are the descriptors'
 * limits beyond the GDT: the stub reads the GDT without checking that the
 * selector lies inside it.
 */

#include "stub.h"
#include "start_info.h"		/* include/, the firmware's own definitions */

#define XEN_ELFNOTE_PHYS32_ENTRY 18

/*
 * The second dword of a segment descriptor (Intel SDM vol. 3A, 3.4.5): base
 * 23:16 and 31:24, limit 19:16, and the attributes G, D/B, P, S, the code
 * bit and, for data, the writable bit. A flat 32-bit segment has base 0,
 * limit 0xFFFFF in 4 KiB units, G, D/B, P and S.
 */
#define DESC_BASE		0xff0000ff
#define DESC_LIMIT_HIGH		0x000f0000
#define DESC_G			(1 << 23)
#define DESC_DB			(1 << 22)
#define DESC_P			(1 << 15)
#define DESC_S			(1 << 12)
#define DESC_CODE		(1 << 11)
#define DESC_WRITABLE		(1 << 9)
#define DESC_FLAT32		(DESC_LIMIT_HIGH | DESC_G | DESC_DB | DESC_P | DESC_S)
#define DESC_FLAT32_MASK	(DESC_BASE | DESC_FLAT32 | DESC_CODE)
#define DESC_LOW_FLAT		0x0000ffff	/* first dword: base 15:0 0, limit 15:0 0xFFFF */

#define E820_TYPE_RAM		1

/* The note the loader takes the entry point from: "Xen", PHYS32_ENTRY, a 32-bit address. */
	.section .note.pvh, "a", @note
	.balign	4
	.long	2f - 1f				/* namesz */
	.long	4				/* descsz */
	.long	XEN_ELFNOTE_PHYS32_ENTRY
1:	.asciz	"Xen"
2:	.balign	4
	.long	pvh_entry

	.text
	.code32
	.globl	pvh_entry
pvh_entry:
	SAVE_ENTRY_STATE pvh_entry

	PRINT	"stub: pvh entry ebx="
	HEX32	entry_ebx
	PRINT	" eip="
	HEX32	entry_eip
	NEWLINE

	movl	$0, bad
	PRINT	"stub: pvh state"
	movw	entry_cs, %ax
	movl	$DESC_FLAT32_MASK, %edx
	movl	$DESC_FLAT32 | DESC_CODE, %esi
	call	flat_segment
	je	1f
	BAD	" BAD cs"
1:	movw	entry_ds, %ax
	movl	$DESC_FLAT32_MASK | DESC_WRITABLE, %edx
	movl	$DESC_FLAT32 | DESC_WRITABLE, %esi
	call	flat_segment
	je	1f
	BAD	" BAD ds"
1:	movw	entry_es, %ax
	call	flat_segment
	je	1f
	BAD	" BAD es"
1:	call	check_cpu_state
	cmpl	$0, entry_cr4
	je	1f
	BAD	" BAD cr4"
1:	cmpl	$pvh_entry, entry_eip
	je	1f
	BAD	" BAD eip"
1:	cmpl	$0, entry_ebx
	jne	1f
	BAD	" BAD ebx"
1:	cmpl	$0, bad
	jne	1f
	PRINT	" ok"
1:	NEWLINE
	cmpl	$0, entry_ebx
	je	stub_finish			/* nothing more to look at */

	movl	entry_ebx, %ebx			/* the start info from here on */
	movl	$0, bad
	PRINT	"stub: start_info magic="
	HEX32	SI_MAGIC(%ebx)
	PRINT	" version="
	HEX32	SI_VERSION(%ebx)
	PRINT	" flags="
	HEX32	SI_FLAGS(%ebx)
	PRINT	" modules="
	HEX32	SI_NR_MODULES(%ebx)
	PRINT	" memmap_entries="
	HEX32	SI_MEMMAP_ENTRIES(%ebx)
	cmpl	$HVM_START_MAGIC, SI_MAGIC(%ebx)
	je	1f
	BAD	" BAD magic"
1:	cmpl	$HVM_START_VERSION, SI_VERSION(%ebx)
	je	1f
	BAD	" BAD version"
1:	cmpl	$0, SI_FLAGS(%ebx)
	je	1f
	BAD	" BAD flags"
1:	cmpl	$0, SI_RESERVED(%ebx)
	je	1f
	BAD	" BAD reserved"
1:	cmpl	$1, SI_NR_MODULES(%ebx)
	jbe	1f
	BAD	" BAD modules"
	/* All the addresses are below 4 GiB here. */
1:	movl	SI_MODLIST_PADDR + 4(%ebx), %eax
	orl	SI_CMDLINE_PADDR + 4(%ebx), %eax
	orl	SI_MEMMAP_PADDR + 4(%ebx), %eax
	jz	1f
	BAD	" BAD high"
1:	call	check_memmap
	jnc	1f
	BAD	" BAD memmap"
1:	call	check_module
	jnc	1f
	BAD	" BAD module"
1:	cmpl	$0, bad
	jne	1f
	PRINT	" ok"
1:	NEWLINE

	movl	SI_MEMMAP_PADDR(%ebx), %edi
	movl	SI_MEMMAP_ENTRIES(%ebx), %ebp
	cmpl	$128, %ebp
	jbe	1f
	movl	$128, %ebp
1:	movl	$MEMMAP_ENTRY_SIZE, %edx
	movl	$memmap_prefix, %esi
	call	print_map

	movl	SI_CMDLINE_PADDR(%ebx), %esi
	call	print_cmdline

	/* Module 0, the initrd, as the bzImage test kernel shows it. */
	xorl	%esi, %esi
	xorl	%ecx, %ecx
	cmpl	$0, SI_NR_MODULES(%ebx)
	je	1f
	movl	SI_MODLIST_PADDR(%ebx), %eax
	movl	MOD_PADDR(%eax), %esi
	movl	MOD_SIZE(%eax), %ecx
1:	movl	%esi, module_addr
	movl	%ecx, module_size
	PRINT	"stub: initrd addr="
	HEX32	module_addr
	PRINT	" size="
	HEX32	module_size
	call	print_head
	NEWLINE

	jmp	stub_finish

/*
 * flat_segment: ZF set when the selector %ax names a GDT descriptor whose
 * first dword is DESC_LOW_FLAT and whose second dword masked with %edx is
 * %esi. The descriptor is read from the GDT rather than through LAR and LSL,
 * which software KVM hosts may fail to emulate. Clobbers %eax, %ecx.
 */
flat_segment:
	movzwl	%ax, %ecx
	testl	$4, %ecx			/* TI: an LDT selector */
	jnz	1f
	andl	$~7, %ecx
	jz	1f				/* the null selector */
	sgdtl	gdtr
	addl	gdtr + 2, %ecx
	cmpl	$DESC_LOW_FLAT, 0(%ecx)
	jne	2f
	movl	4(%ecx), %eax
	andl	%edx, %eax
	cmpl	%esi, %eax
2:	ret
1:	testl	%esp, %esp			/* ZF clear: the stack is not at 0 */
	ret

/*
 * check_memmap: CF set unless the memory map at the start info %ebx has
 * 1 to 128 entries, one of them RAM, and every reserved field 0.
 * Clobbers %eax, %ecx, %edi.
 */
check_memmap:
	movl	SI_MEMMAP_ENTRIES(%ebx), %ecx
	testl	%ecx, %ecx
	jz	3f
	cmpl	$128, %ecx
	ja	3f
	movl	SI_MEMMAP_PADDR(%ebx), %edi
	xorl	%eax, %eax			/* RAM entries seen */
1:	cmpl	$0, MEMMAP_RESERVED(%edi)
	jne	3f
	cmpl	$E820_TYPE_RAM, MEMMAP_TYPE(%edi)
	jne	2f
	incl	%eax
2:	addl	$MEMMAP_ENTRY_SIZE, %edi
	loop	1b
	testl	%eax, %eax
	jz	3f
	clc
	ret
3:	stc
	ret

/*
 * check_module: CF set if the start info %ebx has a module whose address
 * or size does not fit in 32 bits or whose command line or reserved field
 * is not 0. Clobbers %eax.
 */
check_module:
	cmpl	$0, SI_NR_MODULES(%ebx)
	je	1f
	movl	SI_MODLIST_PADDR(%ebx), %eax
	pushl	%edx
	movl	MOD_PADDR + 4(%eax), %edx
	orl	MOD_SIZE + 4(%eax), %edx
	orl	MOD_CMDLINE_PADDR(%eax), %edx
	orl	MOD_CMDLINE_PADDR + 4(%eax), %edx
	orl	MOD_RESERVED(%eax), %edx
	orl	MOD_RESERVED + 4(%eax), %edx
	popl	%edx
	jnz	2f
1:	clc
	ret
2:	stc
	ret

	.section .rodata
memmap_prefix:
	.asciz	"stub: memmap "

	.data
	.balign	4
module_addr:	.long 0
module_size:	.long 0
gdtr:		.word 0
		.long 0
