/*
 * Intel MP table, for a kernel booted without ACPI to find its CPUs and the
 * I/O APIC (MultiProcessor Specification 1.4, chapter 4). It describes the
 * machine QEMU's microvm and the sandbox VMM give the guest:
 *
 *   - one processor entry per vCPU, APIC ids 0..N-1 (N = FW_CFG_NB_CPUS),
 *     the CPU running this code flagged as the bootstrap processor;
 *   - one ISA bus;
 *   - one I/O APIC, id N, version 0x11, at 0xFEC00000;
 *   - an I/O interrupt entry per I/O APIC pin: ISA IRQ i on pin i, except
 *     that IRQ 0 goes to pin 2 and IRQ 2 has no entry when the VMM says so
 *     through FW_CFG_IRQ0_OVERRIDE (QEMU sets it; KVM's default routing does
 *     not), as qboot does. Pins 16-23 are listed too, so that devices whose
 *     interrupt is above 15 (virtio-mmio on IRQ 16+) can be used;
 *   - ExtINT on LINT0 of APIC 0, NMI on LINT1 of every APIC.
 *
 * The floating pointer is at MP_FLOATING (0x9FC00), the configuration table
 * right after it as long as it ends by 0xA0000 (37 CPUs), which keeps both in
 * the KiB that a VMM's e820 map marks reserved for them; a larger table goes
 * right below the floating pointer instead. Linux reserves the table wherever
 * it is (and all of the first MiB anyway).
 *
 * Checksums: a structure's bytes must add up to 0 (mod 256). Rather than
 * read the table back byte by byte (about a thousand instructions, a
 * millisecond where the guest is emulated), every dword is added to a
 * running byte sum in %ebp as it is written: a constant one through
 * BYTESUM32 at assembly time, a run-time one through add_bytes or, where
 * its bytes are at hand in registers, by adding them.
 */

#include "layout.h"
#include "fw_cfg.h"
#include "mptable.h"

#if ISA_BUS_ID != 0
#error "the I/O interrupt entries below assume the ISA bus has id 0"
#endif

/* Stores the constant dword `value` at `offset`(%edi) and adds its bytes to the sum. */
.macro PUT_CONST offset, value
	movl	$(\value), \offset(%edi)
	addl	$BYTESUM32(\value), %ebp
.endm

/* Emits bytes, words or dwords into the header template and adds their bytes to its sum. */
	.set	mpc_header_sum, 0
.macro SUMMED_BYTES bytes:vararg
	.irp	b, \bytes
	.byte	\b
	.set	mpc_header_sum, mpc_header_sum + (\b)
	.endr
.endm
.macro SUMMED_WORD value
	.word	\value
	.set	mpc_header_sum, mpc_header_sum + BYTESUM32(\value)
.endm
.macro SUMMED_LONG value
	.long	\value
	.set	mpc_header_sum, mpc_header_sum + BYTESUM32(\value)
.endm

	.section .rodata
	.balign 4
mpc_header_template:
	SUMMED_BYTES 'P', 'C', 'M', 'P'
	SUMMED_WORD 0				/* base table length, filled in */
	SUMMED_BYTES MPC_SPEC_REV
	SUMMED_BYTES 0				/* checksum, filled in */
	SUMMED_BYTES 'S', 'A', 'N', 'D', 'B', 'O', 'X', ' '	/* OEM id */
	SUMMED_BYTES 'M', 'I', 'C', 'R', 'O', 'V', 'M', ' ', ' ', ' ', ' ', ' ' /* product id */
	SUMMED_LONG 0				/* OEM table pointer */
	SUMMED_WORD 0				/* OEM table size */
	SUMMED_WORD 0				/* entry count, filled in */
	SUMMED_LONG LAPIC_BASE
	SUMMED_WORD 0				/* extended table length */
	SUMMED_BYTES 0				/* extended table checksum */
	SUMMED_BYTES 0				/* reserved */
mpc_header_template_end:
	.equ	MPC_HEADER_TEMPLATE_SUM, mpc_header_sum

	.if	mpc_header_template_end - mpc_header_template - MPC_HEADER_SIZE
	.error	"the MP configuration table header is 44 bytes"
	.endif

	.text
	.code32

/*
 * mptable_build: writes the floating pointer and the configuration table.
 * Clobbers everything but %esp.
 */
	.globl	mptable_build
mptable_build:
	/* N: FW_CFG_NB_CPUS is 16 bits; absent or 0 means 1. */
	FW_CFG_READ_INT FW_CFG_NB_CPUS, 2
	testl	%eax, %eax
	jnz	1f
	incl	%eax
1:	cmpl	$MP_MAX_CPUS, %eax
	jbe	1f
	movl	$MP_MAX_CPUS, %eax
1:	movl	%eax, %ebx			/* N, also the I/O APIC id */

	/* 1: IRQ 0 on pin 2 and no entry for IRQ 2; 0: IRQ i on pin i. */
	FW_CFG_READ_INT FW_CFG_IRQ0_OVERRIDE, 4
	testl	%eax, %eax
	setnz	%al
	movzbl	%al, %eax
	movl	%eax, MP_IRQ0_OVERRIDE

	/* Table length, and its address: after the floating pointer if it fits, else below. */
	imull	$MPC_CPU_SIZE, %ebx, %ecx
	addl	$MPC_FIXED_SIZE, %ecx
	shll	$3, %eax			/* one I/O interrupt entry less */
	subl	%eax, %ecx
	movl	$MP_FLOATING + MPF_SIZE, %edi
	cmpl	$MP_AREA_END - (MP_FLOATING + MPF_SIZE), %ecx
	jbe	1f
	movl	$MP_FLOATING, %edi
	subl	%ecx, %edi
	andl	$~15, %edi
1:	pushl	%edi				/* table address */

	/* Header, then its length and entry count. */
	movl	%ecx, %edx
	movl	$mpc_header_template, %esi
	movl	$MPC_HEADER_SIZE / 4, %ecx
	rep movsl
	movl	(%esp), %esi
	movl	$MPC_HEADER_TEMPLATE_SUM, %ebp
	movw	%dx, MPC_LENGTH(%esi)
	movl	%edx, %eax
	call	add_bytes
	leal	MPC_FIXED_ENTRIES(%ebx), %eax
	subl	MP_IRQ0_OVERRIDE, %eax
	movw	%ax, MPC_ENTRY_COUNT(%esi)
	call	add_bytes

	/*
	 * Processors. Signature and feature flags come from CPUID leaf 1 and
	 * are the same in every entry, so their bytes are summed once.
	 */
	pushl	%ebx
	movl	$1, %eax
	cpuid
	movl	%eax, MP_CPU_SIGNATURE
	movl	%edx, MP_CPU_FEATURES
	shrl	$24, %ebx			/* initial APIC id of this CPU: the BSP */
	movl	%ebx, %esi
	popl	%ebx
	pushl	%ebp
	movl	$BYTESUM32(MP_PROCESSOR | LAPIC_VERSION << 16 | MPC_CPU_ENABLED << 24), %ebp
	call	add_bytes			/* signature */
	movl	MP_CPU_FEATURES, %eax
	call	add_bytes
	movl	%ebp, %edx			/* bytes of an entry, but for its APIC id and BSP flag */
	popl	%ebp
	xorl	%ecx, %ecx
2:	movl	%ecx, %eax
	shll	$8, %eax			/* type, apic id, apic version, flags */
	orl	$(MP_PROCESSOR | LAPIC_VERSION << 16 | MPC_CPU_ENABLED << 24), %eax
	cmpl	%esi, %ecx
	jne	3f
	orl	$(MPC_CPU_BOOTPROCESSOR << 24), %eax
	addl	$MPC_CPU_BOOTPROCESSOR, %ebp
3:	movl	%eax, 0(%edi)
	movl	MP_CPU_SIGNATURE, %eax
	movl	%eax, 4(%edi)
	movl	MP_CPU_FEATURES, %eax
	movl	%eax, 8(%edi)
	movl	$0, 12(%edi)			/* reserved */
	movl	$0, 16(%edi)
	addl	%edx, %ebp
	addl	%ecx, %ebp
	addl	$MPC_CPU_SIZE, %edi
	incl	%ecx
	cmpl	%ebx, %ecx
	jb	2b

	/* The ISA bus: type, bus id, "ISA   ". */
	PUT_CONST 0, MP_BUS | ISA_BUS_ID << 8 | 'I' << 16 | 'S' << 24
	PUT_CONST 4, 'A' | ' ' << 8 | ' ' << 16 | ' ' << 24
	addl	$MPC_BUS_SIZE, %edi

	/* The I/O APIC: type, id N, version, flags; address. */
	movl	%ebx, %eax
	shll	$8, %eax
	PUT_CONST 0, MP_IOAPIC | IOAPIC_VERSION << 16 | MPC_APIC_USABLE << 24
	orl	%eax, 0(%edi)
	addl	%ebx, %ebp
	PUT_CONST 4, IOAPIC_BASE
	addl	$MPC_IOAPIC_SIZE, %edi

	/*
	 * I/O interrupts: type, irq type INT, flags 0 (polarity and trigger
	 * as the bus defines them); source bus, source IRQ, I/O APIC id, pin.
	 */
	movl	%ebx, %esi
	shll	$16, %esi			/* I/O APIC id, in place */
	xorl	%ecx, %ecx			/* ISA IRQ */
4:	movl	%ecx, %edx			/* its pin */
	cmpl	$0, MP_IRQ0_OVERRIDE
	je	5f
	cmpl	$2, %ecx
	je	6f
	testl	%ecx, %ecx
	jnz	5f
	movl	$2, %edx
5:	PUT_CONST 0, MP_INTSRC | MP_IRQ_INT << 8
	leal	(%ecx, %edx), %eax
	addl	%eax, %ebp
	addl	%ebx, %ebp
	shll	$24, %edx
	orl	%esi, %edx
	movl	%ecx, %eax
	shll	$8, %eax
	orl	%eax, %edx			/* the low byte, the source bus, is ISA_BUS_ID: 0 */
	movl	%edx, 4(%edi)
	addl	$MPC_INTSRC_SIZE, %edi
6:	incl	%ecx
	cmpl	$IOAPIC_PINS, %ecx
	jb	4b

	/*
	 * Local interrupts: type, irq type, flags 0; source bus, source IRQ,
	 * destination APIC id (0xFF: all), LINT pin.
	 */
	PUT_CONST 0, MP_LINTSRC | MP_IRQ_EXTINT << 8
	PUT_CONST 4, ISA_BUS_ID | 0 << 8 | 0 << 16 | 0 << 24
	PUT_CONST 8, MP_LINTSRC | MP_IRQ_NMI << 8
	PUT_CONST 12, ISA_BUS_ID | 0 << 8 | 0xff << 16 | 1 << 24

	popl	%esi				/* table address */
	negl	%ebp
	movl	%ebp, %eax
	movb	%al, MPC_CHECKSUM(%esi)

	/* Floating pointer: "_MP_", table address, 1 paragraph, spec 1.4, no default configuration. */
	movl	$MP_FLOATING, %edi
	xorl	%ebp, %ebp
	PUT_CONST 0, MPF_SIGNATURE
	movl	%esi, MPF_PHYSPTR(%edi)
	PUT_CONST MPF_LENGTH_SPEC, 1 | MPC_SPEC_REV << 8
	PUT_CONST 12, 0
	movl	%esi, %eax
	call	add_bytes
	negl	%ebp
	movl	%ebp, %eax
	movb	%al, MP_FLOATING + MPF_CHECKSUM
	ret

/* add_bytes: adds the four bytes of %eax to %ebp. Clobbers %eax. */
add_bytes:
	pushl	%edx
	movzbl	%al, %edx
	addl	%edx, %ebp
	movzbl	%ah, %edx
	addl	%edx, %ebp
	shrl	$16, %eax
	movzbl	%al, %edx
	addl	%edx, %ebp
	movzbl	%ah, %edx
	addl	%edx, %ebp
	popl	%edx
	ret
