import CLinux

// Thin re-spellings so the rest of the module reads as Swift.
@inline(__always) func sbxIoctlPtr(_ fd: Int32, _ request: UInt, _ arg: UnsafeMutableRawPointer?) -> Int32 {
    sbx_ioctl_ptr(fd, request, arg)
}

@inline(__always) func sbxIoctlVal(_ fd: Int32, _ request: UInt, _ value: UInt) -> Int32 {
    sbx_ioctl_val(fd, request, value)
}
