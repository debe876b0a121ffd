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
 * QEMU's isa-debug-exit port 0xf4, and ends the VM (stub_finish in
 * stub-common.S).
 */

#include "stub.h"

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
	SAVE_ENTRY_STATE stub_entry

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
1:	call	check_cpu_state
	cmpl	$0, entry_ebx
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
1:	cmpl	$128, %ebp
	jbe	1f
	movl	$128, %ebp
1:	leal	BP_E820_TABLE(%ebx), %edi
	movl	$20, %edx
	movl	$e820_prefix, %esi
	call	print_map

	movl	HDR_CMD_LINE_PTR(%ebx), %esi
	call	print_cmdline

	/* Initrd: where it is and its first line. */
	PRINT	"stub: initrd addr="
	HEX32	HDR_RAMDISK_IMAGE(%ebx)
	PRINT	" size="
	HEX32	HDR_RAMDISK_SIZE(%ebx)
	movl	HDR_RAMDISK_IMAGE(%ebx), %esi
	movl	HDR_RAMDISK_SIZE(%ebx), %ecx
	call	print_head
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

	jmp	stub_finish

	.section .rodata
e820_prefix:
	.asciz	"stub: e820 "
