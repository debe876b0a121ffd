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
 */

#include "layout.h"
#include "fw_cfg.h"
#include "mptable.h"

#if ISA_BUS_ID != 0
#error "the I/O interrupt entries below assume the ISA bus has id 0"
#endif

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

	FW_CFG_READ_INT FW_CFG_IRQ0_OVERRIDE, 4
	testl	%eax, %eax
	setnz	%al
	movzbl	%al, %ebp			/* 1: IRQ 0 on pin 2, no entry for IRQ 2 */

	/* Table length, and its address: after the floating pointer if it fits, else below. */
	imull	$MPC_CPU_SIZE, %ebx, %ecx
	addl	$MPC_FIXED_SIZE, %ecx
	leal	(, %ebp, MPC_INTSRC_SIZE), %eax
	subl	%eax, %ecx
	movl	$MP_FLOATING + MPF_SIZE, %edi
	cmpl	$MP_AREA_END - (MP_FLOATING + MPF_SIZE), %ecx
	jbe	1f
	movl	$MP_FLOATING, %edi
	subl	%ecx, %edi
	andl	$~15, %edi
1:
	pushl	%edi				/* table address */
	pushl	%ecx				/* table length */

	/* Header, then its length and entry count. */
	movl	$mpc_header_template, %esi
	movl	$MPC_HEADER_SIZE / 4, %ecx
	rep movsl
	movl	(%esp), %eax
	movl	4(%esp), %esi
	movw	%ax, MPC_LENGTH(%esi)
	leal	MPC_FIXED_ENTRIES(%ebx), %eax
	subl	%ebp, %eax
	movw	%ax, MPC_ENTRY_COUNT(%esi)

	/* Processors. Signature and feature flags come from CPUID leaf 1. */
	pushl	%ebx
	movl	$1, %eax
	cpuid
	movl	%eax, MP_CPU_SIGNATURE
	movl	%edx, MP_CPU_FEATURES
	shrl	$24, %ebx			/* initial APIC id of this CPU: the BSP */
	movl	%ebx, %esi
	popl	%ebx
	xorl	%ecx, %ecx
2:	movl	%ecx, %eax
	shll	$8, %eax			/* type, apic id, apic version, flags */
	orl	$(MP_PROCESSOR | LAPIC_VERSION << 16 | MPC_CPU_ENABLED << 24), %eax
	cmpl	%esi, %ecx
	jne	3f
	orl	$(MPC_CPU_BOOTPROCESSOR << 24), %eax
3:	movl	%eax, 0(%edi)
	movl	MP_CPU_SIGNATURE, %eax
	movl	%eax, 4(%edi)
	movl	MP_CPU_FEATURES, %eax
	movl	%eax, 8(%edi)
	movl	$0, 12(%edi)			/* reserved */
	movl	$0, 16(%edi)
	addl	$MPC_CPU_SIZE, %edi
	incl	%ecx
	cmpl	%ebx, %ecx
	jb	2b

	/* The ISA bus: type, bus id, "ISA   ". */
	movl	$(MP_BUS | ISA_BUS_ID << 8 | 'I' << 16 | 'S' << 24), 0(%edi)
	movl	$('A' | ' ' << 8 | ' ' << 16 | ' ' << 24), 4(%edi)
	addl	$MPC_BUS_SIZE, %edi

	/* The I/O APIC: type, id N, version, flags; address. */
	movl	%ebx, %esi
	shll	$8, %esi
	orl	$(MP_IOAPIC | IOAPIC_VERSION << 16 | MPC_APIC_USABLE << 24), %esi
	movl	%esi, 0(%edi)
	movl	$IOAPIC_BASE, 4(%edi)
	addl	$MPC_IOAPIC_SIZE, %edi

	/*
	 * I/O interrupts: type, irq type INT, flags 0 (polarity and trigger
	 * as the bus defines them); source bus, source IRQ, I/O APIC id, pin.
	 */
	movl	%ebx, %esi
	shll	$16, %esi			/* I/O APIC id, in place */
	xorl	%ecx, %ecx			/* ISA IRQ */
4:	movl	%ecx, %edx			/* its pin */
	testl	%ebp, %ebp
	jz	5f
	cmpl	$2, %ecx
	je	6f
	testl	%ecx, %ecx
	jnz	5f
	movl	$2, %edx
5:	shll	$24, %edx
	orl	%esi, %edx
	movl	%ecx, %eax
	shll	$8, %eax
	orl	%eax, %edx			/* the low byte, the source bus, is ISA_BUS_ID: 0 */
	movl	$(MP_INTSRC | MP_IRQ_INT << 8), 0(%edi)
	movl	%edx, 4(%edi)
	addl	$MPC_INTSRC_SIZE, %edi
6:	incl	%ecx
	cmpl	$IOAPIC_PINS, %ecx
	jb	4b

	/*
	 * Local interrupts: type, irq type, flags 0; source bus, source IRQ,
	 * destination APIC id (0xFF: all), LINT pin.
	 */
	movl	$(MP_LINTSRC | MP_IRQ_EXTINT << 8), 0(%edi)
	movl	$(ISA_BUS_ID | 0 << 8 | 0 << 16 | 0 << 24), 4(%edi)
	movl	$(MP_LINTSRC | MP_IRQ_NMI << 8), 8(%edi)
	movl	$(ISA_BUS_ID | 0 << 8 | 0xff << 16 | 1 << 24), 12(%edi)

	/* Table checksum: all its bytes add up to 0. */
	popl	%ecx
	movl	(%esp), %esi
	call	mp_checksum
	popl	%esi
	movb	%al, MPC_CHECKSUM(%esi)

	/* Floating pointer: "_MP_", table address, 1 paragraph, spec 1.4, no default configuration. */
	movl	$MP_FLOATING, %edi
	movl	$MPF_SIGNATURE, 0(%edi)
	movl	%esi, MPF_PHYSPTR(%edi)
	movl	$(1 | MPC_SPEC_REV << 8), MPF_LENGTH_SPEC(%edi)
	movl	$0, 12(%edi)
	movl	%edi, %esi
	movl	$MPF_SIZE, %ecx
	call	mp_checksum
	movb	%al, MP_FLOATING + MPF_CHECKSUM
	ret

/*
 * mp_checksum: returns in %al the byte that makes the %ecx bytes at %esi
 * (whose checksum field is still 0) add up to 0. Clobbers %ecx, %esi, %ah.
 */
mp_checksum:
	xorb	%ah, %ah
1:	lodsb
	addb	%al, %ah
	loop	1b
	movb	%ah, %al
	negb	%al
	ret

	.section .rodata
	.balign 4
mpc_header_template:
	.ascii	"PCMP"
	.word	0				/* base table length, filled in */
	.byte	MPC_SPEC_REV
	.byte	0				/* checksum, filled in */
	.ascii	"SANDBOX "			/* OEM id, 8 bytes */
	.ascii	"MICROVM     "			/* product id, 12 bytes */
	.long	0				/* OEM table pointer */
	.word	0				/* OEM table size */
	.word	0				/* entry count, filled in */
	.long	LAPIC_BASE
	.word	0				/* extended table length */
	.byte	0				/* extended table checksum */
	.byte	0				/* reserved */
