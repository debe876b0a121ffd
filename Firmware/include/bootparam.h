/*
 * Offsets into struct boot_params (the "zero page") and its setup header,
 * from Documentation/x86/zero-page.rst, Documentation/x86/boot.rst and
 * arch/x86/include/uapi/asm/bootparam.h of Linux 6.1.
 */
#ifndef SANDBOX_FIRMWARE_BOOTPARAM_H
#define SANDBOX_FIRMWARE_BOOTPARAM_H

#define BOOT_PARAMS_SIZE	0x1000

/* struct boot_params */
#define BP_ALT_MEM_K		0x1e0	/* u32: KiB of RAM from 1 MiB up */
#define BP_E820_ENTRIES		0x1e8	/* u8 */
#define BP_HDR			0x1f1	/* struct setup_header */
#define BP_HDR_LIMIT		0x290	/* edd_mbr_sig_buffer: no header field reaches here */
#define BP_E820_TABLE		0x2d0	/* struct boot_e820_entry[128] */
#define BP_E820_MAX		128
#define E820_ENTRY_SIZE		20	/* { u64 addr; u64 size; u32 type; } packed */
#define E820_ADDR		0
#define E820_SIZE		8
#define E820_TYPE		16
#define E820_TYPE_RAM		1
#define HIGH_MEMORY		0x100000	/* 1 MiB, where alt_mem_k counts from */

/* struct setup_header, at the same offsets in the bzImage and in boot_params */
#define HDR_JUMP_OFFSET		0x201	/* u8: the header ends at 0x202 + this */
#define HDR_HEADER		0x202	/* u32: "HdrS" */
#define HDR_VERSION		0x206	/* u16: boot protocol version */
#define HDR_TYPE_OF_LOADER	0x210	/* u8 */
#define HDR_CODE32_START	0x214	/* u32 */
#define HDR_RAMDISK_IMAGE	0x218	/* u32 */
#define HDR_RAMDISK_SIZE	0x21c	/* u32 */
#define HDR_CMD_LINE_PTR	0x228	/* u32, protocol 2.02+ */

#define HDR_MAGIC		0x53726448	/* "HdrS" as a little-endian dword */
#define HDR_VERSION_MIN		0x0202		/* cmd_line_ptr exists from 2.02 on */
#define HDR_END_BASE		0x202		/* the header ends at this + the jump offset */
#define LOADER_TYPE_UNDEFINED	0xff		/* boot.rst: "0xFF: undefined" */

/*
 * The setup blob is (setup_sects + 1) * 512 bytes with setup_sects >= 1
 * (0 means 4), so a real one is never shorter than this.
 */
#define SETUP_SIZE_MIN		1024

#endif
