/*
 * The PVH boot ABI: struct hvm_start_info (version 1) and its tables, from
 * Xen's xen/include/public/arch-x86/hvm/start_info.h (Linux 6.1 carries a
 * copy in include/xen/interface/hvm/start_info.h) and docs/misc/pvh.pandoc.
 * All fields are little-endian; 64-bit ones are written as two dwords.
 */
#ifndef SANDBOX_FIRMWARE_START_INFO_H
#define SANDBOX_FIRMWARE_START_INFO_H

#define HVM_START_MAGIC		0x336ec578	/* "xEn3" with the 0x80 bit of the "E" set */
#define HVM_START_VERSION	1		/* the version with the memory map */

/* struct hvm_start_info, 56 bytes */
#define SI_MAGIC		0	/* u32 */
#define SI_VERSION		4	/* u32 */
#define SI_FLAGS		8	/* u32: SIF_xxx */
#define SI_NR_MODULES		12	/* u32 */
#define SI_MODLIST_PADDR	16	/* u64: struct hvm_modlist_entry[nr_modules] */
#define SI_CMDLINE_PADDR	24	/* u64: NUL-terminated command line, 0 = none */
#define SI_RSDP_PADDR		32	/* u64: ACPI RSDP, 0 = none */
#define SI_MEMMAP_PADDR		40	/* u64: struct hvm_memmap_table_entry[memmap_entries] */
#define SI_MEMMAP_ENTRIES	48	/* u32 */
#define SI_RESERVED		52	/* u32: must be zero */
#define SI_SIZE			56

/* struct hvm_modlist_entry, 32 bytes; Linux takes the first module as its initrd */
#define MOD_PADDR		0	/* u64 */
#define MOD_SIZE		8	/* u64 */
#define MOD_CMDLINE_PADDR	16	/* u64 */
#define MOD_RESERVED		24	/* u64 */
#define MOD_ENTRY_SIZE		32

/* struct hvm_memmap_table_entry, 24 bytes: an e820 entry and a reserved dword */
#define MEMMAP_ADDR		0	/* u64 */
#define MEMMAP_SIZE		8	/* u64 */
#define MEMMAP_TYPE		16	/* u32: E820 type */
#define MEMMAP_RESERVED		20	/* u32: must be zero */
#define MEMMAP_ENTRY_SIZE	24

#endif
