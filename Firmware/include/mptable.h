/*
 * Intel MultiProcessor Specification 1.4, chapter 4 ("MP Configuration
 * Table"); field names follow Linux's arch/x86/include/asm/mpspec_def.h.
 */
#ifndef SANDBOX_FIRMWARE_MPTABLE_H
#define SANDBOX_FIRMWARE_MPTABLE_H

/* MP floating pointer structure, 16 bytes (spec 4.1). */
#define MPF_SIGNATURE		0x5f504d5f	/* "_MP_" as a little-endian dword */
#define MPF_PHYSPTR		4
#define MPF_LENGTH_SPEC		8	/* u8 length in 16-byte units, u8 spec revision */
#define MPF_CHECKSUM		10
#define MPF_SIZE		16

/* MP configuration table header, 44 bytes (spec 4.2). */
#define MPC_LENGTH		4	/* u16: header and base entries */
#define MPC_CHECKSUM		7
#define MPC_ENTRY_COUNT		34	/* u16 */
#define MPC_HEADER_SIZE		44
#define MPC_SPEC_REV		4	/* 1.4 */

/* Entry types and sizes (spec 4.3). */
#define MP_PROCESSOR		0
#define MP_BUS			1
#define MP_IOAPIC		2
#define MP_INTSRC		3
#define MP_LINTSRC		4
#define MPC_CPU_SIZE		20
#define MPC_BUS_SIZE		8
#define MPC_IOAPIC_SIZE		8
#define MPC_INTSRC_SIZE		8
#define MPC_LINTSRC_SIZE	8

/* Processor entry flags. */
#define MPC_CPU_ENABLED		0x01
#define MPC_CPU_BOOTPROCESSOR	0x02

/* I/O APIC entry flags. */
#define MPC_APIC_USABLE		0x01

/* Interrupt types of I/O and local interrupt entries. */
#define MP_IRQ_INT		0
#define MP_IRQ_NMI		1
#define MP_IRQ_EXTINT		3

/*
 * The machine: local APICs and the one I/O APIC at their architectural
 * addresses, with the versions KVM's in-kernel irqchip reports (local APIC
 * 0x14, I/O APIC 0x11, 24 pins).
 */
#define LAPIC_BASE		0xFEE00000
#define LAPIC_VERSION		0x14
#define IOAPIC_BASE		0xFEC00000
#define IOAPIC_VERSION		0x11
#define IOAPIC_PINS		24
#define ISA_BUS_ID		0

/*
 * APIC ids are 8 bits and 0xFF is the broadcast id; the processors get ids
 * 0..N-1 and the I/O APIC gets N, so N stays at or below 254.
 */
#define MP_MAX_CPUS		254

/*
 * Size and entry count of everything but the processor entries: header, one
 * bus, one I/O APIC, one I/O interrupt entry per pin and two local interrupt
 * entries. With the IRQ 0 override the entry for ISA IRQ 2 is left out.
 */
#define MPC_FIXED_SIZE		(MPC_HEADER_SIZE + MPC_BUS_SIZE + MPC_IOAPIC_SIZE + \
				 IOAPIC_PINS * MPC_INTSRC_SIZE + 2 * MPC_LINTSRC_SIZE)
#define MPC_FIXED_ENTRIES	(1 + 1 + IOAPIC_PINS + 2)

/* The sum of the four bytes of a 32-bit constant, for checksums. */
#define BYTESUM32(x)	(((x) & 0xff) + (((x) >> 8) & 0xff) + (((x) >> 16) & 0xff) + (((x) >> 24) & 0xff))

#endif
