/*
 * The part the test kernels share: the checks of the CPU state and of the MP
 * table, output on the 8250 UART at 0x3f8, the end of the run, and the
 * variables and stack. Linked into each test kernel; see stub.h.
 */

#include "stub.h"

	.text
	.code32

/*
 * check_cpu_state: the state both entry protocols ask for, IF clear, paging
 * off, protection on, from the entry_* variables; prints " BAD <what>" and
 * counts a failure for each miss, and counts them in bad too.
 */
	.globl	check_cpu_state
check_cpu_state:
	testl	$EFLAGS_IF, entry_eflags
	jz	1f
	BAD	" BAD if"
1:	testl	$CR0_PG, entry_cr0
	jz	1f
	BAD	" BAD pg"
1:	testl	$CR0_PE, entry_cr0
	jnz	1f
	BAD	" BAD pe"
1:	ret

/*
 * print_map: prints %ebp entries of a memory map at %edi, %edx bytes apart,
 * each { u64 addr; u64 size; u32 type; } as a line "<prefix>addr size type"
 * with the prefix at %esi. Clobbers %eax, %ecx, %edi, %ebp.
 */
	.globl	print_map
print_map:
	jmp	2f
1:	pushl	%esi
	call	puts
	popl	%esi
	HEX64	0(%edi)
	PRINT	" "
	HEX64	8(%edi)
	PRINT	" "
	movl	16(%edi), %eax
	HEX8
	NEWLINE
	addl	%edx, %edi
	decl	%ebp
2:	testl	%ebp, %ebp
	jnz	1b
	ret

/* print_cmdline: prints the line `stub: cmdline "<the command line at %esi>"`, none for %esi 0. Clobbers %ecx, %esi. */
	.globl	print_cmdline
print_cmdline:
	PRINT	"stub: cmdline \""
	testl	%esi, %esi
	jz	1f
	movl	$1024, %ecx
	call	put_line
1:	PRINT	"\""
	NEWLINE
	ret

/*
 * print_head: prints ` head "<first line>"` of the %ecx bytes at %esi, at
 * most 64 bytes of it. Clobbers %ecx, %esi.
 */
	.globl	print_head
print_head:
	PRINT	" head \""
	testl	%ecx, %ecx
	jz	1f
	cmpl	$64, %ecx
	jbe	2f
	movl	$64, %ecx
2:	call	put_line
1:	PRINT	"\""
	ret

/*
 * stub_finish: checks the MP table, prints the result line, writes
 * STUB_DONE or STUB_FAILED to port 0x4f0 and to QEMU's isa-debug-exit port
 * and ends the VM, whichever of these the machine has: isa-debug-exit (exit
 * status (value << 1) | 1), a reset through the i8042 (a VMM that ends the
 * VM on a guest reboot), and last a triple fault: without an IDT the
 * breakpoint escalates to a shutdown. Does not return.
 */
	.globl	stub_finish
stub_finish:
	call	check_mp
	PRINT	"stub: result"
	cmpl	$0, fails
	jne	1f
	PRINT	" PASS"
	NEWLINE
	movb	$STUB_DONE, %al
	jmp	2f
1:	PRINT	" FAIL"
	NEWLINE
	movb	$STUB_FAILED, %al
2:	movw	$BOOT_TIMER_PORT, %dx
	outb	%al, %dx
	movw	$DEBUG_EXIT_PORT, %dx
	outb	%al, %dx
	movb	$I8042_RESET, %al
	outb	%al, $I8042_COMMAND_PORT
	lidt	null_idt
	int3
1:	cli
	hlt
	jmp	1b

/*
 * check_mp: finds the MP floating pointer where Linux looks for it
 * (arch/x86/kernel/mpparse.c, default_find_smp_config: the first KiB, the
 * last KiB below 640 KiB, then 0xF0000-0xFFFFF; on 16-byte boundaries,
 * "_MP_", length 1, checksum 0, spec 1 or 4), checks both checksums and
 * counts the entries of the configuration table by type.
 */
check_mp:
	movl	$0, %esi
	movl	$0x400, %ecx
	call	mp_scan
	jnc	1f
	movl	$639 * 0x400, %esi
	movl	$0x400, %ecx
	call	mp_scan
	jnc	1f
	movl	$0xf0000, %esi
	movl	$0x10000, %ecx
	call	mp_scan
	jnc	1f
	PRINT	"stub: mp none"
	NEWLINE
	incl	fails
	ret

1:	movl	%esi, mp_floating
	movl	4(%esi), %ebx			/* physptr */
	movl	%ebx, mp_table
	movl	$0, bad
	cmpl	$0x504d4350, (%ebx)		/* "PCMP" */
	je	2f
	incl	bad
2:	movl	%ebx, %esi
	movzwl	4(%ebx), %ecx
	call	byte_sum
	testb	%al, %al
	jz	2f
	incl	bad
2:
	/*
	 * Walk the entries, counting them by type: processors are 20 bytes,
	 * everything else 8. Note the bootstrap processor, the I/O APIC id
	 * and the pin of ISA IRQ 0.
	 */
	movl	$0, mp_count + 4 * 0
	movl	$0, mp_count + 4 * 3
	movl	$0, mp_count + 4 * 4
	movl	$0xff, mp_bsp
	movl	$0xff, mp_ioapic
	movl	$0xff, mp_irq0_pin
	movzwl	34(%ebx), %ebp			/* entry count */
	leal	44(%ebx), %edi
	jmp	5f
3:	movzbl	(%edi), %eax
	cmpl	$4, %eax
	ja	8f
	incl	mp_count(, %eax, 4)
	movl	$8, %edx			/* entry size */
	movzbl	1(%edi), %ecx			/* apic id, for processors and I/O APICs */
	cmpb	$0, %al				/* processor */
	je	4f
	cmpb	$2, %al				/* I/O APIC */
	je	7f
	cmpb	$3, %al				/* I/O interrupt; bus and local ones need no note */
	jne	6f
	cmpb	$0, 5(%edi)			/* source IRQ 0? */
	jne	6f
	movzbl	7(%edi), %eax
	movl	%eax, mp_irq0_pin
	jmp	6f
4:	movl	$20, %edx
	testb	$2, 3(%edi)			/* bootstrap processor */
	jz	6f
	movl	%ecx, mp_bsp
	jmp	6f
7:	movl	%ecx, mp_ioapic
6:	addl	%edx, %edi
	decl	%ebp
5:	testl	%ebp, %ebp
	jnz	3b
	jmp	9f
8:	incl	bad				/* unknown entry type */
9:
	PRINT	"stub: mp found="
	HEX32	mp_floating
	PRINT	" table="
	HEX32	mp_table
	PRINT	" cpus="
	movl	mp_count + 4 * 0, %eax
	HEX8
	PRINT	" bsp="
	movl	mp_bsp, %eax
	HEX8
	PRINT	" ioapic="
	movl	mp_ioapic, %eax
	HEX8
	PRINT	" intsrc="
	movl	mp_count + 4 * 3, %eax
	HEX8
	PRINT	" lint="
	movl	mp_count + 4 * 4, %eax
	HEX8
	PRINT	" irq0pin="
	movl	mp_irq0_pin, %eax
	HEX8
	NEWLINE

	PRINT	"stub: mp checksums"
	cmpl	$0, bad
	jne	1f
	PRINT	" ok"
	NEWLINE
	ret
1:	PRINT	" BAD"
	NEWLINE
	incl	fails
	ret

/* mp_scan: looks for a valid floating pointer in %ecx bytes at %esi; CF clear and %esi on it if found. */
mp_scan:
1:	cmpl	$0x5f504d5f, (%esi)		/* "_MP_" */
	jne	2f
	cmpb	$1, 8(%esi)
	jne	2f
	cmpb	$4, 9(%esi)
	je	3f
	cmpb	$1, 9(%esi)
	jne	2f
3:	pushl	%esi
	pushl	%ecx
	movl	$16, %ecx
	call	byte_sum
	popl	%ecx
	popl	%esi
	testb	%al, %al
	jnz	2f
	clc
	ret
2:	addl	$16, %esi
	subl	$16, %ecx
	jnz	1b
	stc
	ret

/* byte_sum: %al = the sum of the %ecx bytes at %esi. Clobbers %ecx, %esi, %ah. */
byte_sum:
	xorb	%ah, %ah
1:	lodsb
	addb	%al, %ah
	loop	1b
	movb	%ah, %al
	ret

/* ------------------------------------------------------------------ */
/* Output                                                              */

/* puts: the NUL-terminated string at %esi, which has no control characters. */
	.globl	puts
puts:
	pushl	%ecx
	movl	$-1, %ecx
	call	put_line
	popl	%ecx
	ret

/*
 * put_line: at most %ecx bytes at %esi, stopping at a NUL or a newline;
 * other control bytes show as '?'. Clobbers %ecx, %esi.
 */
	.globl	put_line
put_line:
	pushl	%eax
	pushl	%edx
	movw	$UART_PORT, %dx
1:	lodsb
	testb	%al, %al
	jz	2f
	cmpb	$'\n', %al
	je	2f
	cmpb	$' ', %al
	jae	3f
	movb	$'?', %al
3:	outb	%al, %dx
	loop	1b
2:	popl	%edx
	popl	%eax
	ret

/* put_hex: the low %ecx hex digits of %eax. */
	.globl	put_hex
put_hex:
	pushl	%eax
	pushl	%ebx
	pushl	%edx
	movl	%eax, %ebx
	movw	$UART_PORT, %dx
	/* Rotate the first digit to print into the low nibble. */
	pushl	%ecx
	negl	%ecx
	addl	$8, %ecx
	shll	$2, %ecx
	roll	%cl, %ebx
	popl	%ecx
1:	roll	$4, %ebx
	movl	%ebx, %eax
	andl	$0xf, %eax
	movb	hex_digits(%eax), %al
	outb	%al, %dx
	loop	1b
	popl	%edx
	popl	%ebx
	popl	%eax
	ret

	.section .rodata
hex_digits:
	.ascii	"0123456789abcdef"
	.balign	8
null_idt:
	.word	0
	.long	0

	.data
	.balign	4
	.globl	entry_esi, entry_ebx, entry_edi, entry_ebp, entry_eip, entry_eflags
	.globl	entry_cr0, entry_cr4, entry_cs, entry_ds, entry_es, entry_ss, bad, fails
entry_esi:	.long 0
entry_ebx:	.long 0
entry_edi:	.long 0
entry_ebp:	.long 0
entry_eip:	.long 0
entry_eflags:	.long 0
entry_cr0:	.long 0
entry_cr4:	.long 0
entry_cs:	.word 0
entry_ds:	.word 0
entry_es:	.word 0
entry_ss:	.word 0
bad:		.long 0
fails:		.long 0
mp_floating:	.long 0
mp_table:	.long 0
mp_count:	.long 0, 0, 0, 0, 0	/* entries of each type 0..4 */
mp_bsp:		.long 0xff
mp_ioapic:	.long 0xff
mp_irq0_pin:	.long 0xff

	.bss
	.balign	16
	.skip	STUB_STACK_SIZE
	.globl	stub_stack_top
stub_stack_top:
