/*
 * Memory map, I/O ports and segment selectors of the sandbox firmware.
 *
 * Included by the assembly sources and by the linker script, so it holds
 * preprocessor definitions only.
 */
#ifndef SANDBOX_FIRMWARE_LAYOUT_H
#define SANDBOX_FIRMWARE_LAYOUT_H

/*
 * The ROM: 64 KiB whose last byte sits at 0xFFFFFFFF. At reset the CPU runs
 * in real mode with CS.base = 0xFFFF0000 and IP = 0xFFF0, so the whole ROM is
 * reachable CS-relative. The firmware never writes to it and never relies on
 * an alias of it below 1 MiB.
 */
#define ROM_BASE		0xFFFF0000
#define ROM_SIZE		0x10000

/*
 * The last 256 bytes of the ROM hold the real-mode code, the GDT and the
 * reset vector at 0xFFFFFFF0, so that they can refer to each other with
 * offsets the assembler resolves.
 */
#define RESET_BASE		0xFFFFFF00
#define RESET_SIZE		0x100
#define RESET_VECTOR_OFFSET	0xF0

/*
 * RAM below 1 MiB that the firmware writes. The VMM must not place the
 * setup code, the command line, the kernel or the initrd there.
 */
#define FILE_DIR_BUF		0x1000	/* fw_cfg file directory */
#define FILE_DIR_MAX		256	/* entries read at most: 0x1000..0x5004 */
#define ZERO_PAGE		0x7000	/* struct boot_params, 4 KiB */
#define DMA_DESC		0x8000	/* FWCfgDmaAccess, 16 bytes */
#define SCRATCH			0x8010	/* small fw_cfg items land here */
#define MP_CPU_SIGNATURE	0x8020	/* CPUID.1:EAX, copied into the MP table */
#define MP_CPU_FEATURES		0x8024	/* CPUID.1:EDX, copied into the MP table */
#define MP_IRQ0_OVERRIDE	0x8028	/* 1 when ISA IRQ 0 is on I/O APIC pin 2 */
#define STACK_TOP		0x9000	/* grows down from here */

/*
 * PVH boot (an ELF kernel the VMM has loaded itself): struct hvm_start_info,
 * the module list and the memory map take the page that holds the zero page
 * on the bzImage path, and the e820 map is read into the file directory
 * buffer (free again once the file is found) before it is widened into the
 * memory map. A command line for which the VMM gives no address (QEMU gives
 * none for ELF kernels) goes where QEMU puts a bzImage's.
 */
#define PVH_START_INFO		0x7000	/* struct hvm_start_info, 56 bytes */
#define PVH_MODLIST		0x7040	/* one struct hvm_modlist_entry, 32 bytes */
#define PVH_MEMMAP		0x7080	/* struct hvm_memmap_table_entry[], up to 0x7C80 */
#define PVH_E820_BUF		FILE_DIR_BUF
#define PVH_CMDLINE		0x20000

/* Lowest address the VMM may give for the real-mode setup blob. */
#define SETUP_ADDR_MIN		0x10000

/*
 * The MP floating pointer goes at the start of the last KiB of base memory
 * (639 KiB), the second place Linux scans; the configuration table follows
 * it up to MP_AREA_END when it fits there (up to 37 CPUs), else it goes
 * right below the floating pointer, 16-byte aligned.
 */
#define MP_FLOATING		0x9FC00
#define MP_AREA_END		0xA0000

/* I/O ports. */
#define UART_PORT		0x3f8	/* 8250 transmit holding register */
#define BOOT_TIMER_PORT		0x4f0	/* the VMM timestamps each byte written */

/* Values written to BOOT_TIMER_PORT. */
#define BOOT_TIMER_FIRMWARE	0x10	/* protected mode reached */
#define BOOT_TIMER_KERNEL	0x11	/* about to jump to the kernel (either entry) */
#define BOOT_TIMER_FAILED	0xEE	/* firmware gave up; a message is on the UART */

/*
 * GDT selectors. The Linux 32-bit boot protocol wants a flat code segment at
 * 0x10 (__BOOT_CS) and a flat data segment at 0x18 (__BOOT_DS)
 * (Documentation/x86/boot.rst, "32-bit Boot Protocol").
 */
#define BOOT_CS			0x10
#define BOOT_DS			0x18

/* CR0 bits (Intel SDM vol. 3A, 2.5). */
#define CR0_PE			0x00000001
#define CR0_NW			0x20000000
#define CR0_CD			0x40000000

#endif
