/*
 * Shared by the test kernels (stub-kernel.S, a bzImage; stub-pvh.S, an ELF
 * with a PVH entry) and their common part (stub-common.S): ports, constants
 * and the output macros. Every macro keeps every register but those named.
 */
#ifndef SANDBOX_FIRMWARE_STUB_H
#define SANDBOX_FIRMWARE_STUB_H

#define UART_PORT		0x3f8
#define BOOT_TIMER_PORT		0x4f0
#define STUB_DONE		0x20
#define STUB_FAILED		0x21
#define DEBUG_EXIT_PORT		0xf4	/* QEMU -device isa-debug-exit,iobase=0xf4 */
#define I8042_COMMAND_PORT	0x64
#define I8042_RESET		0xfe	/* pulse the CPU reset line */

#define BOOT_CS			0x10
#define BOOT_DS			0x18

#define EFLAGS_IF		0x200
#define CR0_PE			0x1
#define CR0_PG			0x80000000

#define STUB_STACK_SIZE		4096

#ifdef __ASSEMBLER__
	.macro	PRINT text
	.pushsection .rodata
9:	.asciz	"\text"
	.popsection
	pushl	%esi
	movl	$9b, %esi
	call	puts
	popl	%esi
	.endm

	.macro	NEWLINE
	pushl	%eax
	pushl	%edx
	movw	$UART_PORT, %dx
	movb	$'\r', %al
	outb	%al, %dx
	movb	$'\n', %al
	outb	%al, %dx
	popl	%edx
	popl	%eax
	.endm

	/* Eight hex digits of the dword at \operand. */
	.macro	DIGITS32 operand
	pushl	%eax
	pushl	%ecx
	movl	\operand, %eax
	movl	$8, %ecx
	call	put_hex
	popl	%ecx
	popl	%eax
	.endm

	/* "0x" and eight digits of the dword at \operand. */
	.macro	HEX32 operand
	PRINT	"0x"
	DIGITS32 \operand
	.endm

	/* "0x" and sixteen digits of the qword at \operand (a memory operand). */
	.macro	HEX64 operand
	PRINT	"0x"
	DIGITS32 4+\operand
	DIGITS32 \operand
	.endm

	/* "0x" and two digits of %al. Clobbers %ecx. */
	.macro	HEX8
	PRINT	"0x"
	movl	$2, %ecx
	call	put_hex
	.endm

	/* A failed check: its name on the current line, one more failure. */
	.macro	BAD text
	PRINT	"\text"
	incl	bad
	incl	fails
	.endm

	/*
	 * The first thing at an entry point: keeps the registers and the
	 * segment, flags and control register state in the entry_* variables
	 * of stub-common.S, with \entry the address the code was linked for,
	 * and switches to the stub's own stack.
	 */
	.macro	SAVE_ENTRY_STATE entry
	movl	%esi, entry_esi
	movl	%ebx, entry_ebx
	movl	%edi, entry_edi
	movl	%ebp, entry_ebp
	movw	%cs, entry_cs
	movw	%ds, entry_ds
	movw	%es, entry_es
	movw	%ss, entry_ss
	movl	$stub_stack_top, %esp
	pushfl
	popl	entry_eflags
	movl	%cr0, %eax
	movl	%eax, entry_cr0
	movl	%cr4, %eax
	movl	%eax, entry_cr4
	call	1f
1:	popl	%eax
	subl	$1b - \entry, %eax
	movl	%eax, entry_eip
	movl	$0, fails
	.endm
#endif

#endif
