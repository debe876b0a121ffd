/*
 * QEMU's firmware configuration interface on x86 I/O ports, as documented in
 * QEMU's docs/specs/fw_cfg.rst. Item keys follow QEMU's
 * include/standard-headers/linux/qemu_fw_cfg.h and hw/i386/fw_cfg.h.
 */
#ifndef SANDBOX_FIRMWARE_FW_CFG_H
#define SANDBOX_FIRMWARE_FW_CFG_H

/* Ports. */
#define FW_CFG_PORT_SELECTOR	0x510	/* 16-bit write, little-endian */
#define FW_CFG_PORT_DATA	0x511	/* 8-bit read */
#define FW_CFG_PORT_DMA_HIGH	0x514	/* big-endian high half of the descriptor address */
#define FW_CFG_PORT_DMA_LOW	0x518	/* big-endian low half; writing it starts the transfer */

/* Item keys. Integers are little-endian. */
#define FW_CFG_SIGNATURE	0x00	/* "QEMU" */
#define FW_CFG_ID		0x01	/* feature bitmap, 32 bits */
#define FW_CFG_NB_CPUS		0x05	/* 16 bits */
#define FW_CFG_KERNEL_ADDR	0x07	/* 32 bits */
#define FW_CFG_KERNEL_SIZE	0x08	/* 32 bits */
#define FW_CFG_INITRD_ADDR	0x0a	/* 32 bits */
#define FW_CFG_INITRD_SIZE	0x0b	/* 32 bits */
#define FW_CFG_KERNEL_ENTRY	0x10	/* 32 bits: the PVH entry of an ELF kernel the VMM loaded, else absent */
#define FW_CFG_KERNEL_DATA	0x11
#define FW_CFG_INITRD_DATA	0x12
#define FW_CFG_CMDLINE_ADDR	0x13	/* 32 bits */
#define FW_CFG_CMDLINE_SIZE	0x14	/* 32 bits, including the NUL */
#define FW_CFG_CMDLINE_DATA	0x15
#define FW_CFG_SETUP_ADDR	0x16	/* 32 bits */
#define FW_CFG_SETUP_SIZE	0x17	/* 32 bits */
#define FW_CFG_SETUP_DATA	0x18
#define FW_CFG_FILE_DIR		0x19
#define FW_CFG_IRQ0_OVERRIDE	0x8002	/* 32 bits: nonzero when ISA IRQ 0 drives IOAPIC pin 2 */

/* The signature as a little-endian dword. */
#define FW_CFG_SIGNATURE_QEMU	0x554d4551

/* FW_CFG_ID bits. */
#define FW_CFG_ID_DMA		0x02

/* FWCfgDmaAccess: { be32 control; be32 length; be64 address; }. */
#define FW_CFG_DMA_CONTROL	0
#define FW_CFG_DMA_LENGTH	4
#define FW_CFG_DMA_ADDRESS_HIGH	8
#define FW_CFG_DMA_ADDRESS_LOW	12

/* Control bits; the selector goes in the upper 16 bits. */
#define FW_CFG_DMA_ERROR	0x01
#define FW_CFG_DMA_READ		0x02
#define FW_CFG_DMA_SKIP		0x04
#define FW_CFG_DMA_SELECT	0x08
#define FW_CFG_DMA_WRITE	0x10

/* File directory: be32 count, then entries { be32 size; be16 select; be16 reserved; char name[56]; }. */
#define FW_CFG_FILE_SIZE	0
#define FW_CFG_FILE_SELECT	4
#define FW_CFG_FILE_NAME	8
#define FW_CFG_FILE_ENTRY_SIZE	64
#define FW_CFG_FILE_ENTRY_SHIFT	6

/* Byte swap of a 32-bit constant, for values written to or read from big-endian fields. */
#define BSWAP32(x)	((((x) >> 24) & 0xff) | (((x) >> 8) & 0xff00) | \
			 (((x) << 8) & 0xff0000) | (((x) << 24) & 0xff000000))

#ifdef __ASSEMBLER__
/* %eax = the little-endian integer item `key`, `width` (1..4) bytes wide. Clobbers %ecx, %edx, %edi. */
.macro FW_CFG_READ_INT key, width
	movl	$\key, %eax
	movl	$\width, %ecx
	call	fw_cfg_read_int
.endm
#endif

#endif
