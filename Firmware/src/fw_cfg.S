/*
 * fw_cfg access: the signature and feature check through the I/O ports, then
 * every transfer through the DMA interface, which moves an item of any size
 * with one port write (QEMU docs/specs/fw_cfg.rst, "Guest-side DMA
 * Interface").
 *
 * Calling convention of this file: arguments in registers as documented per
 * routine; %ebx, %esi and %ebp survive unless said otherwise.
 */

#include "layout.h"
#include "fw_cfg.h"
#include "fail.h"

	.text
	.code32

/*
 * fw_cfg_init: checks that the device answers "QEMU" and offers DMA, and
 * clears the high half of the descriptor address, which never changes.
 * Clobbers %eax, %ecx, %edx, %edi.
 */
	.globl	fw_cfg_init
fw_cfg_init:
	movw	$FW_CFG_PORT_SELECTOR, %dx
	movw	$FW_CFG_SIGNATURE, %ax
	outw	%ax, %dx
	incw	%dx				/* FW_CFG_PORT_DATA */
	movl	$SCRATCH, %edi
	movl	$4, %ecx
	rep insb
	cmpl	$FW_CFG_SIGNATURE_QEMU, SCRATCH
	jne	1f

	decw	%dx				/* FW_CFG_PORT_SELECTOR */
	movw	$FW_CFG_ID, %ax
	outw	%ax, %dx
	incw	%dx
	inb	%dx, %al			/* the feature bits live in the low byte */
	testb	$FW_CFG_ID_DMA, %al
	jz	2f

	movl	$0, DMA_DESC + FW_CFG_DMA_ADDRESS_HIGH
	ret

1:	FAIL	msg_no_fw_cfg
2:	FAIL	msg_no_dma

/*
 * fw_cfg_read: selects item %eax and copies its first %ecx bytes to the
 * guest-physical address %edi. Clobbers %eax, %ecx, %edx, %edi.
 */
	.globl	fw_cfg_read
fw_cfg_read:
	shll	$16, %eax
	orl	$(FW_CFG_DMA_SELECT | FW_CFG_DMA_READ), %eax
	/* fall through */

/*
 * fw_cfg_dma: runs one DMA operation with control word %eax (host order),
 * length %ecx and guest-physical address %edi, and waits for it. A reported
 * error is fatal. Clobbers %eax, %ecx, %edx, %edi.
 */
	.globl	fw_cfg_dma
fw_cfg_dma:
	bswap	%eax
	movl	%eax, DMA_DESC + FW_CFG_DMA_CONTROL
	bswap	%ecx
	movl	%ecx, DMA_DESC + FW_CFG_DMA_LENGTH
	bswap	%edi
	movl	%edi, DMA_DESC + FW_CFG_DMA_ADDRESS_LOW
	/* The address fits in 32 bits, so writing the low half alone starts the operation. */
	movl	$BSWAP32(DMA_DESC), %eax
	movw	$FW_CFG_PORT_DMA_LOW, %dx
	outl	%eax, %dx
	/*
	 * The control field reads zero once the operation is over, or just the
	 * error bit if it failed. QEMU completes it inside the port write;
	 * the loop covers a device that does not.
	 */
1:	movl	DMA_DESC + FW_CFG_DMA_CONTROL, %eax
	testl	$~BSWAP32(FW_CFG_DMA_ERROR), %eax
	jnz	1b
	testl	%eax, %eax
	jnz	2f
	ret

2:	FAIL	msg_dma_error

/*
 * fw_cfg_read_int: returns in %eax the little-endian integer item %eax that
 * is %ecx (1..4) bytes wide. An item the device does not have reads as 0.
 * Clobbers %ecx, %edx, %edi.
 */
	.globl	fw_cfg_read_int
fw_cfg_read_int:
	movl	$0, SCRATCH
	movl	$SCRATCH, %edi
	call	fw_cfg_read
	movl	SCRATCH, %eax
	ret

/*
 * fw_cfg_find_file: looks up the file whose NUL-terminated name is at %esi,
 * %ecx bytes long counting the NUL, in the file directory. Returns its
 * selector in %eax and its size in %ecx, or %eax = 0 when there is no such
 * file. Only the first FILE_DIR_MAX entries are searched.
 * Clobbers everything but %esp.
 */
	.globl	fw_cfg_find_file
fw_cfg_find_file:
	movl	%esi, %ebp			/* name */
	movl	%ecx, %ebx			/* name length */

	/*
	 * Count and entries in one transfer of the largest directory searched;
	 * what lies past the end of a shorter one reads as zeros.
	 */
	movl	$FW_CFG_FILE_DIR, %eax
	movl	$4 + FILE_DIR_MAX * FW_CFG_FILE_ENTRY_SIZE, %ecx
	movl	$FILE_DIR_BUF, %edi
	call	fw_cfg_read
	movl	FILE_DIR_BUF, %edx		/* be32 count: entries left */
	bswap	%edx
	cmpl	$FILE_DIR_MAX, %edx
	jbe	1f
	movl	$FILE_DIR_MAX, %edx
1:	movl	$FILE_DIR_BUF + 4, %eax		/* current entry */
	testl	%edx, %edx
	jz	4f
2:	movl	%ebp, %esi
	leal	FW_CFG_FILE_NAME(%eax), %edi
	movl	%ebx, %ecx
	repe cmpsb
	je	3f
	addl	$FW_CFG_FILE_ENTRY_SIZE, %eax
	decl	%edx
	jnz	2b
4:	xorl	%eax, %eax
	ret

3:	movl	FW_CFG_FILE_SIZE(%eax), %ecx
	bswap	%ecx
	movzwl	FW_CFG_FILE_SELECT(%eax), %eax
	xchgb	%al, %ah			/* be16 */
	ret

	.section .rodata
msg_no_fw_cfg:
	.asciz	"no fw_cfg device (signature at port 0x510 is not \"QEMU\")"
msg_no_dma:
	.asciz	"fw_cfg has no DMA interface (FW_CFG_ID bit 1 clear)"
msg_dma_error:
	.asciz	"fw_cfg DMA transfer failed"
