/*
 * Layout of the 64 KiB ROM mapped at 0xFFFF0000-0xFFFFFFFF: 32-bit code and
 * read-only data from the bottom, the reset section in the last 256 bytes.
 * Preprocessed with cpp so that the addresses come from layout.h.
 */

#include "layout.h"

OUTPUT_FORMAT("elf32-i386")
OUTPUT_ARCH(i386)
ENTRY(protected_mode_start)

SECTIONS
{
	. = ROM_BASE;
	.text : { *(.text) *(.text.*) }
	.rodata : { *(.rodata) *(.rodata.*) }

	/* The ROM is never written: there is no place for data or bss. */
	.data : { *(.data) *(.data.*) }
	.bss : { *(.bss) *(.bss.*) *(COMMON) }

	. = RESET_BASE;
	.reset : { KEEP(*(.reset)) }

	/DISCARD/ : { *(.note*) *(.comment) *(.eh_frame*) }
}

ASSERT(SIZEOF(.data) == 0 && SIZEOF(.bss) == 0, "the firmware must not have writable data")
ASSERT(SIZEOF(.reset) == RESET_SIZE, "the reset section must fill the last 256 bytes")
ASSERT(ADDR(.rodata) + SIZEOF(.rodata) <= RESET_BASE, "code and data overlap the reset section")
