/*
 * The 32-bit part of the boot: everything after the switch to protected mode
 * in reset.S, in the order the work is done.
 */

#include "layout.h"
#include "fw_cfg.h"

	.text
	.code32

	.globl	protected_mode_start
protected_mode_start:
	movw	$BOOT_DS, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movl	$STACK_TOP, %esp

	movb	$BOOT_TIMER_FIRMWARE, %al
	movw	$BOOT_TIMER_PORT, %dx
	outb	%al, %dx

	call	fw_cfg_init

	/* An ELF kernel that the VMM has loaded comes with its PVH entry point. */
	FW_CFG_READ_INT FW_CFG_KERNEL_ENTRY, 4
	testl	%eax, %eax
	jnz	1f

	call	linux_load
	call	mptable_build
	jmp	linux_start

1:	pushl	%eax				/* the entry, for pvh_start */
	call	pvh_load
	call	mptable_build
	jmp	pvh_start
