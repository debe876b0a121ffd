/*
 * A fake Linux kernel for testing the firmware (and any loader of the 32-bit
 * boot protocol). It is a bzImage with a real setup header and a 32-bit
 * payload that, instead of booting, reports on the 8250 UART at 0x3f8 what
 * it was handed:
 *
 *   stub: entry esi=0x00007000 eip=0x00100000
 *   stub: protocol ok                  (or: stub: protocol BAD <what>)
 *   stub: header loader=0xb0 version=0x020f code32_start=0x00100000
 *   stub: e820 entries=0x01 alt_mem_k=0x0003fc00
 *   stub: e820 0x0000000000000000 0x0000000010000000 0x01
 *   stub: cmdline "<the command line>"
 *   stub: initrd addr=0x... size=0x... head "<its first line>"
 *   stub: kernel tail ok               (or BAD: the kernel was cut short)
 *   stub: mp found=0x0009fc00 table=0x... cpus=0x02 bsp=0x00 ioapic=0x02 intsrc=0x17 lint=0x02 irq0pin=0x02
 *   stub: mp checksums ok              (or BAD)
 *   stub: result PASS                  (or: stub: result FAIL)
 *
 * then writes STUB_DONE (0x20) or STUB_FAILED (0x21) to port 0x4f0 and to
 * QEMU's isa-debug-exit port 0xf4, and ends the VM (see the end of
 * stub_entry).
 */

#define UART_PORT		0x3f8
#define BOOT_TIMER_PORT		0x4f0
#define STUB_DONE		0x20
#define STUB_FAILED		0x21
#define DEBUG_EXIT_PORT		0xf4	/* QEMU -device isa-debug-exit,iobase=0xf4 */
#define I8042_COMMAND_PORT	0x64
#define I8042_RESET		0xfe	/* pulse the CPU reset line */

#define BOOT_CS			0x10
#define BOOT_DS			0x18

/* struct boot_params offsets (Documentation/x86/zero-page.rst, boot.rst). */
#define BP_ALT_MEM_K		0x1e0
#define BP_E820_ENTRIES		0x1e8
#define BP_E820_TABLE		0x2d0
#define HDR_VERSION		0x206
#define HDR_TYPE_OF_LOADER	0x210
#define HDR_CODE32_START	0x214
#define HDR_RAMDISK_IMAGE	0x218
#define HDR_RAMDISK_SIZE	0x21c
#define HDR_CMD_LINE_PTR	0x228

#define EFLAGS_IF		0x200
#define CR0_PE			0x1
#define CR0_PG			0x80000000

/* Output macros; each keeps every register but those named. */
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

/* ------------------------------------------------------------------ */
/* Setup part: a boot sector whose only content is the setup header.   */

	.section .setup, "a"
	.org	0x1f1
header_start:				/* 0x1f1 */
	.byte	1			/* setup_sects */
	.word	0			/* root_flags */
	.long	stub_syssize		/* syssize */
	.word	0			/* ram_size */
	.word	0xffff			/* vid_mode: normal */
	.word	0			/* root_dev */
	.word	0xaa55			/* boot_flag */
	.byte	0xeb			/* jump: a short jmp over the header */
	.byte	header_end - header_start - (0x202 - 0x1f1)
	.ascii	"HdrS"			/* 0x202 header */
	.word	0x020f			/* 0x206 version */
	.long	0			/* 0x208 realmode_swtch */
	.word	0			/* 0x20c start_sys_seg */
	.word	0			/* 0x20e kernel_version */
	.byte	0			/* 0x210 type_of_loader */
	.byte	0x01			/* 0x211 loadflags: LOADED_HIGH */
	.word	0			/* 0x212 setup_move_size */
	.long	0x100000		/* 0x214 code32_start */
	.long	0			/* 0x218 ramdisk_image */
	.long	0			/* 0x21c ramdisk_size */
	.long	0			/* 0x220 bootsect_kludge */
	.word	0			/* 0x224 heap_end_ptr */
	.byte	0			/* 0x226 ext_loader_ver */
	.byte	0			/* 0x227 ext_loader_type */
	.long	0			/* 0x228 cmd_line_ptr */
	.long	0x37ffffff		/* 0x22c initrd_addr_max */
	.long	0x200000		/* 0x230 kernel_alignment */
	.byte	0			/* 0x234 relocatable_kernel */
	.byte	0			/* 0x235 min_alignment */
	.word	0			/* 0x236 xloadflags */
	.long	2047			/* 0x238 cmdline_size */
	.long	0			/* 0x23c hardware_subarch */
	.quad	0			/* 0x240 hardware_subarch_data */
	.long	0			/* 0x248 payload_offset */
	.long	0			/* 0x24c payload_length */
	.quad	0			/* 0x250 setup_data */
	.quad	0x100000		/* 0x258 pref_address */
	.long	0			/* 0x260 init_size */
	.long	0			/* 0x264 handover_offset */
	.long	0			/* 0x268 kernel_info_offset */
header_end:
	.if	header_end - header_start - (0x26c - 0x1f1)
	.error	"the setup header of protocol 2.15 ends at 0x26c"
	.endif
	.org	0x400

/* ------------------------------------------------------------------ */
/* Protected-mode part, entered at 0x100000.                           */

	.text
	.code32
	.globl	stub_entry
stub_entry:
	/* Keep the entry state before anything changes it. */
	movl	%esi, entry_esi
	movl	%ebx, entry_ebx
	movl	%edi, entry_edi
	movl	%ebp, entry_ebp
	movw	%cs, entry_cs
	movw	%ds, entry_ds
	movw	%es, entry_es
	movw	%ss, entry_ss
	movl	$stack_top, %esp
	pushfl
	popl	entry_eflags
	movl	%cr0, %eax
	movl	%eax, entry_cr0
	call	1f
1:	popl	%eax
	subl	$1b - stub_entry, %eax
	movl	%eax, entry_eip

	PRINT	"stub: entry esi="
	HEX32	entry_esi
	PRINT	" eip="
	HEX32	entry_eip
	NEWLINE

	/* Boot protocol: flat boot selectors, IF clear, paging off, EBX/EDI/EBP zero. */
	movl	$0, bad
	PRINT	"stub: protocol"
	cmpw	$BOOT_CS, entry_cs
	je	1f
	BAD	" BAD cs"
1:	cmpw	$BOOT_DS, entry_ds
	je	1f
	BAD	" BAD ds"
1:	cmpw	$BOOT_DS, entry_es
	je	1f
	BAD	" BAD es"
1:	cmpw	$BOOT_DS, entry_ss
	je	1f
	BAD	" BAD ss"
1:	testl	$EFLAGS_IF, entry_eflags
	jz	1f
	BAD	" BAD if"
1:	testl	$CR0_PG, entry_cr0
	jz	1f
	BAD	" BAD pg"
1:	testl	$CR0_PE, entry_cr0
	jnz	1f
	BAD	" BAD pe"
1:	cmpl	$0, entry_ebx
	je	1f
	BAD	" BAD ebx"
1:	cmpl	$0, entry_edi
	je	1f
	BAD	" BAD edi"
1:	cmpl	$0, entry_ebp
	je	1f
	BAD	" BAD ebp"
1:	cmpl	$stub_entry, entry_eip
	je	1f
	BAD	" BAD eip"
1:	cmpl	$0, bad
	jne	1f
	PRINT	" ok"
1:	NEWLINE

	movl	entry_esi, %ebx			/* boot_params from here on */

	PRINT	"stub: header loader="
	movzbl	HDR_TYPE_OF_LOADER(%ebx), %eax
	HEX8
	PRINT	" version=0x"
	movzwl	HDR_VERSION(%ebx), %eax
	movl	$4, %ecx
	call	put_hex
	PRINT	" code32_start="
	HEX32	HDR_CODE32_START(%ebx)
	NEWLINE

	/* e820 */
	PRINT	"stub: e820 entries="
	movzbl	BP_E820_ENTRIES(%ebx), %eax
	HEX8
	PRINT	" alt_mem_k="
	HEX32	BP_ALT_MEM_K(%ebx)
	NEWLINE
	movzbl	BP_E820_ENTRIES(%ebx), %ebp
	testl	%ebp, %ebp
	jnz	1f
	incl	fails
1:	leal	BP_E820_TABLE(%ebx), %edi
	cmpl	$128, %ebp
	jbe	2f
	movl	$128, %ebp
	jmp	2f
3:	PRINT	"stub: e820 "
	HEX64	0(%edi)
	PRINT	" "
	HEX64	8(%edi)
	PRINT	" "
	movl	16(%edi), %eax
	HEX8
	NEWLINE
	addl	$20, %edi
	decl	%ebp
2:	testl	%ebp, %ebp
	jnz	3b

	/* Command line */
	PRINT	"stub: cmdline \""
	movl	HDR_CMD_LINE_PTR(%ebx), %esi
	testl	%esi, %esi
	jz	1f
	movl	$1024, %ecx
	call	put_line
1:	PRINT	"\""
	NEWLINE

	/* Initrd: where it is and its first line. */
	PRINT	"stub: initrd addr="
	HEX32	HDR_RAMDISK_IMAGE(%ebx)
	PRINT	" size="
	HEX32	HDR_RAMDISK_SIZE(%ebx)
	PRINT	" head \""
	movl	HDR_RAMDISK_IMAGE(%ebx), %esi
	movl	HDR_RAMDISK_SIZE(%ebx), %ecx
	testl	%ecx, %ecx
	jz	1f
	cmpl	$64, %ecx
	jbe	2f
	movl	$64, %ecx
2:	call	put_line
1:	PRINT	"\""
	NEWLINE

	/* The last dword of the kernel file. */
	PRINT	"stub: kernel tail"
	cmpl	$0x4c494154, stub_tail
	je	1f
	incl	fails
	PRINT	" BAD"
	jmp	2f
1:	PRINT	" ok"
2:	NEWLINE

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

	/*
	 * End the VM, whichever of these the machine has: QEMU's
	 * isa-debug-exit device (exit status (value << 1) | 1), a reset
	 * through the i8042 (a VMM that ends the VM on a guest reboot), and
	 * last a triple fault: without an IDT the breakpoint escalates to a
	 * shutdown.
	 */
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
entry_esi:	.long 0
entry_ebx:	.long 0
entry_edi:	.long 0
entry_ebp:	.long 0
entry_eip:	.long 0
entry_eflags:	.long 0
entry_cr0:	.long 0
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
	.skip	4096
stack_top:
