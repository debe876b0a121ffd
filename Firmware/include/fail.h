/* Failure path shared by the firmware sources. */
#ifndef SANDBOX_FIRMWARE_FAIL_H
#define SANDBOX_FIRMWARE_FAIL_H

#ifdef __ASSEMBLER__
/* Prints "sandbox-firmware: " and the NUL-terminated string at `message`, then stops for good. */
.macro FAIL message
	movl	$\message, %esi
	jmp	firmware_fail
.endm
#endif

#endif
