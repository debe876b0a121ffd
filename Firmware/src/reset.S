/*
 * Reset vector and the switch to 32-bit protected mode.
 *
 * At reset the CPU is in real mode with CS.selector = 0xF000,
 * CS.base = 0xFFFF0000 and IP = 0xFFF0 (Intel SDM vol. 3A, 9.1.4), so the
 * first instruction is fetched from 0xFFFFFFF0. As long as CS is not
 * reloaded, every CS-relative access reaches the ROM at the top of 4 GiB.
 * This section is the last 256 bytes of the ROM (RESET_BASE): it loads the
 * GDT through a CS-relative operand and far-jumps straight to a 32-bit
 * linear address in the ROM, never touching a low alias of it.
 */

#include "layout.h"

/* Offset from CS.base of a label in this section, for real-mode operands. */
#define CS_OFFSET(label)	((RESET_BASE - ROM_BASE) + ((label) - reset_section))

	.section .reset, "ax"
	.code16

reset_section:

real_mode_start:
	/* The 32-bit operand size loads all 32 bits of the GDT base. */
	lgdtl	%cs:CS_OFFSET(gdt_pointer)

	/*
	 * Protected mode on. Clear CD and NW, which are set at reset, so that
	 * the firmware and the kernel it loads run with caches enabled.
	 */
	movl	%cr0, %eax
	andl	$~(CR0_CD | CR0_NW), %eax
	orb	$CR0_PE, %al
	movl	%eax, %cr0

	/* ptr16:32 far jump: CS = BOOT_CS, EIP = an address inside the ROM. */
	ljmpl	$BOOT_CS, $protected_mode_start

/*
 * Flat 4 GiB segments at the selectors the Linux 32-bit boot protocol
 * requires; the kernel runs on this GDT until it loads its own. The
 * descriptors are marked accessed so that loading a selector never makes the
 * CPU write the accessed bit into the ROM.
 */
	.balign 8
gdt:
	.quad	0			/* 0x00: null */
	.quad	0			/* 0x08: unused */
	.quad	0x00cf9b000000ffff	/* 0x10: code, base 0, 4 GiB, 32-bit, execute/read, accessed */
	.quad	0x00cf93000000ffff	/* 0x18: data, base 0, 4 GiB, read/write, accessed */
gdt_end:

gdt_pointer:
	.word	gdt_end - gdt - 1
	.long	gdt

	.org	RESET_VECTOR_OFFSET
reset_vector:
	/* IF is clear at reset; nothing to do but leave the 16 bytes. */
	jmp	real_mode_start

	.org	RESET_SIZE
