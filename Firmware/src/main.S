/*
 * The 32-bit part of the boot: everything after the switch to protected mode
 * in reset.S, in the order the work is done.
 */

#include "layout.h"

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
	call	linux_load
	call	mptable_build
	jmp	linux_start
