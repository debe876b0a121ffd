/*
 * Linux boot through fw_cfg, as QEMU's x86 loader prepares it
 * (hw/i386/x86.c, x86_load_linux): the VMM has split the bzImage into its
 * real-mode setup blob, whose header it has already patched, and the
 * protected-mode kernel, and chosen an address for each blob. The firmware
 * copies every blob to its address, builds struct boot_params from the
 * setup header and the e820 map, and enters the kernel through the 32-bit
 * boot protocol (Documentation/x86/boot.rst, "32-bit Boot Protocol").
 */

#include "layout.h"
#include "fw_cfg.h"
#include "bootparam.h"
#include "fail.h"

	.text
	.code32

/*
 * linux_load: loads setup, kernel, command line and initrd and fills the
 * zero page at ZERO_PAGE. Clobbers everything but %esp.
 */
	.globl	linux_load
linux_load:
	/* The zero page starts out all zero. */
	movl	$ZERO_PAGE, %edi
	movl	$BOOT_PARAMS_SIZE / 4, %ecx
	xorl	%eax, %eax
	rep stosl

	/*
	 * The setup blob, to its address; its header is the one to hand
	 * over. Without one there is no kernel either.
	 */
	FW_CFG_READ_INT FW_CFG_SETUP_SIZE, 4
	testl	%eax, %eax
	jz	.Lno_kernel
	cmpl	$SETUP_SIZE_MIN, %eax
	jb	.Lnot_bzimage
	movl	%eax, %esi
	FW_CFG_READ_INT FW_CFG_SETUP_ADDR, 4
	cmpl	$SETUP_ADDR_MIN, %eax
	jb	.Lsetup_low
	movl	%eax, %ebp			/* setup address */
	movl	$FW_CFG_SETUP_DATA, %eax
	movl	%esi, %ecx
	movl	%ebp, %edi
	call	fw_cfg_read

	cmpl	$HDR_MAGIC, HDR_HEADER(%ebp)
	jne	.Lnot_bzimage
	cmpw	$HDR_VERSION_MIN, HDR_VERSION(%ebp)
	jb	.Lnot_bzimage

	/*
	 * Copy the setup header, from 0x1f1 to 0x202 + the jump offset at
	 * 0x201, into the zero page. A bogus length stops at BP_HDR_LIMIT.
	 */
	movzbl	HDR_JUMP_OFFSET(%ebp), %ecx
	addl	$HDR_END_BASE - BP_HDR, %ecx
	cmpl	$BP_HDR_LIMIT - BP_HDR, %ecx
	jbe	1f
	movl	$BP_HDR_LIMIT - BP_HDR, %ecx
1:	leal	BP_HDR(%ebp), %esi
	movl	$ZERO_PAGE + BP_HDR, %edi
	movl	%ecx, %edx
	shrl	$2, %ecx			/* dwords first, then the odd bytes */
	rep movsl
	movl	%edx, %ecx
	andl	$3, %ecx
	rep movsb

	/* QEMU writes its own loader id (0xB0); leave a VMM's choice alone. */
	cmpb	$0, ZERO_PAGE + HDR_TYPE_OF_LOADER
	jne	1f
	movb	$LOADER_TYPE_UNDEFINED, ZERO_PAGE + HDR_TYPE_OF_LOADER
1:
	/*
	 * The protected-mode kernel. Its first byte is the 32-bit entry point
	 * (boot.rst: "the start address of loaded 32/64-bit kernel"), recorded
	 * in code32_start for the kernel's benefit.
	 */
	movl	$kernel_blob, %esi
	call	load_blob
	testl	%ebx, %ebx
	jz	.Lno_kernel
	movl	%eax, ZERO_PAGE + HDR_CODE32_START

	/* Command line and initrd; the fields stay 0 for an absent one. */
	movl	$cmdline_blob, %esi
	call	load_blob
	movl	%eax, ZERO_PAGE + HDR_CMD_LINE_PTR
	movl	$initrd_blob, %esi
	call	load_blob
	movl	%eax, ZERO_PAGE + HDR_RAMDISK_IMAGE
	movl	%ebx, ZERO_PAGE + HDR_RAMDISK_SIZE

	/* The e820 map has the layout of boot_params.e820_table: it goes there as it is. */
	movl	$ZERO_PAGE + BP_E820_TABLE, %edi
	call	e820_read
	movb	%al, ZERO_PAGE + BP_E820_ENTRIES

	/*
	 * alt_mem_k, the BIOS E801 answer: KiB of RAM from 1 MiB up, from the
	 * RAM entry that covers 1 MiB. Linux ignores an e820 map of fewer than
	 * two entries (arch/x86/kernel/e820.c, append_e820_table) and then
	 * assumes RAM at [0, 636 KiB) and [1 MiB, 1 MiB + alt_mem_k KiB).
	 * QEMU's microvm hands out such a one-entry map when it runs without
	 * KVM.
	 */
	movl	%eax, %ecx
	movl	$ZERO_PAGE + BP_E820_TABLE, %esi
	jecxz	3f
1:	cmpl	$E820_TYPE_RAM, E820_TYPE(%esi)
	jne	2f
	cmpl	$0, E820_ADDR + 4(%esi)
	jne	2f
	cmpl	$HIGH_MEMORY, E820_ADDR(%esi)
	ja	2f
	movl	E820_ADDR(%esi), %eax		/* %edx:%eax = end - 1 MiB */
	xorl	%edx, %edx
	addl	E820_SIZE(%esi), %eax
	adcl	E820_SIZE + 4(%esi), %edx
	subl	$HIGH_MEMORY, %eax
	sbbl	$0, %edx
	js	2f				/* ends below 1 MiB */
	shrdl	$10, %edx, %eax
	shrl	$10, %edx
	jz	4f
	movl	$0xffffffff, %eax		/* 4 TiB or more */
4:	movl	%eax, ZERO_PAGE + BP_ALT_MEM_K
	jmp	3f
2:	addl	$E820_ENTRY_SIZE, %esi
	loop	1b
3:	ret

.Lno_kernel:
	FAIL	msg_no_kernel
.Lnot_bzimage:
	FAIL	msg_not_bzimage
.Lsetup_low:
	FAIL	msg_setup_low

/*
 * e820_read: copies the e820 map, the file "etc/e820" of packed { le64 addr;
 * le64 size; le32 type; } entries, to %edi, at most BP_E820_MAX entries of
 * it, and returns the number of entries in %eax. Without the file the boot
 * fails. Clobbers everything but %esp.
 */
	.globl	e820_read
e820_read:
	pushl	%edi
	movl	$e820_file_name, %esi
	movl	$e820_file_name_end - e820_file_name, %ecx
	call	fw_cfg_find_file
	popl	%edi
	testl	%eax, %eax
	jz	1f
	cmpl	$BP_E820_MAX * E820_ENTRY_SIZE, %ecx
	jbe	2f
	movl	$BP_E820_MAX * E820_ENTRY_SIZE, %ecx
2:	movl	%ecx, %ebx
	call	fw_cfg_read
	movl	%ebx, %eax
	xorl	%edx, %edx
	movl	$E820_ENTRY_SIZE, %ecx
	divl	%ecx
	ret

1:	FAIL	msg_no_e820

/*
 * load_blob: copies a blob to the address the VMM chose for it. %esi points
 * to three 16-bit keys: its size item, its address item and its data item.
 * Returns the address in %eax and the size in %ebx, both 0 when the VMM has
 * no such blob. Clobbers %ecx, %edx, %edi.
 */
	.globl	load_blob
load_blob:
	movzwl	0(%esi), %eax
	movl	$4, %ecx
	call	fw_cfg_read_int
	movl	%eax, %ebx
	testl	%eax, %eax
	jz	1f
	movzwl	2(%esi), %eax
	movl	$4, %ecx
	call	fw_cfg_read_int
	pushl	%eax
	movl	%eax, %edi
	movzwl	4(%esi), %eax
	movl	%ebx, %ecx
	call	fw_cfg_read
	popl	%eax
1:	ret

/*
 * linux_start: enters the kernel loaded by linux_load. The CPU is already in
 * the state boot.rst asks for: protected mode, paging off, interrupts off,
 * CS = BOOT_CS, DS = ES = SS = BOOT_DS, all flat. Does not return.
 */
	.globl	linux_start
linux_start:
	movb	$BOOT_TIMER_KERNEL, %al
	movw	$BOOT_TIMER_PORT, %dx
	outb	%al, %dx
	movl	ZERO_PAGE + HDR_CODE32_START, %eax
	movl	$ZERO_PAGE, %esi
	xorl	%ebx, %ebx
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	jmp	*%eax

	.section .rodata
	.balign 2
kernel_blob:
	.word	FW_CFG_KERNEL_SIZE, FW_CFG_KERNEL_ADDR, FW_CFG_KERNEL_DATA
cmdline_blob:
	.word	FW_CFG_CMDLINE_SIZE, FW_CFG_CMDLINE_ADDR, FW_CFG_CMDLINE_DATA
	.globl	initrd_blob
initrd_blob:
	.word	FW_CFG_INITRD_SIZE, FW_CFG_INITRD_ADDR, FW_CFG_INITRD_DATA
e820_file_name:
	.asciz	"etc/e820"
e820_file_name_end:
msg_no_kernel:
	.asciz	"no kernel (FW_CFG_SETUP_SIZE or FW_CFG_KERNEL_SIZE is 0)"
msg_not_bzimage:
	.asciz	"kernel setup is not a bzImage header of boot protocol 2.02 or later"
msg_setup_low:
	.asciz	"FW_CFG_SETUP_ADDR is missing or below 0x10000 (a bzImage's setup goes at 0x10000 or above; an ELF kernel needs FW_CFG_KERNEL_ENTRY)"
msg_no_e820:
	.asciz	"no etc/e820 file in fw_cfg"
