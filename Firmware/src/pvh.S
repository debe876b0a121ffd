/*
 * PVH boot of an uncompressed ELF kernel, as QEMU's x86 loader prepares it
 * for its pvh.bin option ROM (hw/i386/x86.c, load_elfboot): the VMM has
 * loaded the ELF segments into guest RAM itself and put the 32-bit entry of
 * the kernel's XEN_ELFNOTE_PHYS32_ENTRY note into FW_CFG_KERNEL_ENTRY. The
 * firmware copies the command line and the initrd, describes them and the
 * e820 map in struct hvm_start_info, and enters the kernel the way Xen's
 * docs/misc/pvh.pandoc describes: 32-bit protected mode, paging off,
 * %ebx = the start info (Linux: arch/x86/platform/pvh/head.S).
 */

#include "layout.h"
#include "fw_cfg.h"
#include "bootparam.h"
#include "start_info.h"

	.if	PVH_MEMMAP + BP_E820_MAX * MEMMAP_ENTRY_SIZE > ZERO_PAGE + BOOT_PARAMS_SIZE
	.error	"the PVH memory map must fit in the page at PVH_START_INFO"
	.endif
	.if	PVH_MODLIST < PVH_START_INFO + SI_SIZE || PVH_MEMMAP < PVH_MODLIST + MOD_ENTRY_SIZE
	.error	"the PVH start info, module list and memory map overlap"
	.endif

	.text
	.code32

/*
 * pvh_load: loads command line and initrd and writes the start info, the
 * module list and the memory map. Every field is written, so nothing depends
 * on what RAM held before (after a reset, the previous boot's data).
 * Clobbers everything but %esp.
 */
	.globl	pvh_load
pvh_load:
	/*
	 * The command line, to the VMM's address or, when it gives none,
	 * PVH_CMDLINE. Its size includes the NUL; 0 means none, cmdline_paddr 0.
	 */
	FW_CFG_READ_INT FW_CFG_CMDLINE_SIZE, 4
	testl	%eax, %eax
	jz	2f
	movl	%eax, %ebx
	FW_CFG_READ_INT FW_CFG_CMDLINE_ADDR, 4
	testl	%eax, %eax
	jnz	1f
	movl	$PVH_CMDLINE, %eax
1:	movl	%eax, %esi
	movl	%eax, %edi
	movl	$FW_CFG_CMDLINE_DATA, %eax
	movl	%ebx, %ecx
	call	fw_cfg_read
	movl	%esi, %eax
2:	movl	%eax, PVH_START_INFO + SI_CMDLINE_PADDR

	/* The initrd, to its address; as module 0 it is the kernel's initrd. */
	movl	$initrd_blob, %esi
	call	load_blob
	movl	%eax, PVH_MODLIST + MOD_PADDR
	movl	%ebx, PVH_MODLIST + MOD_SIZE
	testl	%ebx, %ebx
	setnz	%al
	movzbl	%al, %eax
	movl	%eax, PVH_START_INFO + SI_NR_MODULES

	/* The e820 map, widened into the memory map: 20-byte entries become 24. */
	movl	$PVH_E820_BUF, %edi
	call	e820_read
	movl	%eax, PVH_START_INFO + SI_MEMMAP_ENTRIES
	movl	%eax, %edx
	movl	$PVH_E820_BUF, %esi
	movl	$PVH_MEMMAP, %edi
	xorl	%eax, %eax
	testl	%edx, %edx
	jz	2f
1:	movl	$E820_ENTRY_SIZE / 4, %ecx
	rep movsl
	stosl					/* reserved */
	decl	%edx
	jnz	1b
2:
	/* The rest of the start info and the module entry; %eax is 0. */
	movl	$HVM_START_MAGIC, PVH_START_INFO + SI_MAGIC
	movl	$HVM_START_VERSION, PVH_START_INFO + SI_VERSION
	movl	%eax, PVH_START_INFO + SI_FLAGS
	movl	$PVH_MODLIST, PVH_START_INFO + SI_MODLIST_PADDR
	movl	%eax, PVH_START_INFO + SI_MODLIST_PADDR + 4
	movl	%eax, PVH_START_INFO + SI_CMDLINE_PADDR + 4
	movl	%eax, PVH_START_INFO + SI_RSDP_PADDR	/* no ACPI */
	movl	%eax, PVH_START_INFO + SI_RSDP_PADDR + 4
	movl	$PVH_MEMMAP, PVH_START_INFO + SI_MEMMAP_PADDR
	movl	%eax, PVH_START_INFO + SI_MEMMAP_PADDR + 4
	movl	%eax, PVH_START_INFO + SI_RESERVED
	movl	%eax, PVH_MODLIST + MOD_PADDR + 4
	movl	%eax, PVH_MODLIST + MOD_SIZE + 4
	movl	%eax, PVH_MODLIST + MOD_CMDLINE_PADDR
	movl	%eax, PVH_MODLIST + MOD_CMDLINE_PADDR + 4
	movl	%eax, PVH_MODLIST + MOD_RESERVED
	movl	%eax, PVH_MODLIST + MOD_RESERVED + 4
	ret

/*
 * pvh_start: enters the kernel loaded by pvh_load at the entry point on top
 * of the stack. The CPU is already in the state pvh.pandoc asks for:
 * protected mode with CR0.PE the only writable bit set, CR4 0, paging and
 * interrupts off, CS = BOOT_CS and DS = ES = SS = BOOT_DS, all flat. Does
 * not return.
 */
	.globl	pvh_start
pvh_start:
	movb	$BOOT_TIMER_KERNEL, %al
	movw	$BOOT_TIMER_PORT, %dx
	outb	%al, %dx
	popl	%eax
	movl	$PVH_START_INFO, %ebx
	jmp	*%eax
