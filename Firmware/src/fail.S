/*
 * The failure path: a message on the 8250 UART, BOOT_TIMER_FAILED on the
 * boot timer port so that the VMM learns of it without parsing the console,
 * then a halt the CPU never leaves (interrupts stay off).
 */

#include "layout.h"

	.text
	.code32

/* firmware_fail: %esi = NUL-terminated reason. Does not return. */
	.globl	firmware_fail
firmware_fail:
	pushl	%esi
	movl	$msg_prefix, %esi
	call	uart_puts
	popl	%esi
	call	uart_puts
	movl	$msg_newline, %esi
	call	uart_puts

	movb	$BOOT_TIMER_FAILED, %al
	movw	$BOOT_TIMER_PORT, %dx
	outb	%al, %dx
1:	cli
	hlt
	jmp	1b

/*
 * uart_puts: writes the NUL-terminated string at %esi to the UART. The
 * emulated 8250 takes a byte at any time, so neither the line settings nor
 * the transmitter-empty bit are looked at. Clobbers %eax, %edx, %esi.
 */
uart_puts:
	movw	$UART_PORT, %dx
1:	lodsb
	testb	%al, %al
	jz	2f
	outb	%al, %dx
	jmp	1b
2:	ret

	.section .rodata
msg_prefix:
	.asciz	"sandbox-firmware: "
msg_newline:
	.asciz	"\r\n"
