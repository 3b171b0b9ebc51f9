//! A private anonymous mapping, the memory the hold and mmap workloads
//! write through syscalls.

/// A private anonymous read-write mapping at a kernel-chosen address,
/// unmapped on drop (or by [`AnonMap::unmap`], which says whether munmap
/// failed).
pub struct AnonMap {
    pub addr: *mut libc::c_void,
    pub len: usize,
}

// SAFETY: the mapping is plain memory; threads only pass its address to
// syscalls (write, ioctl, mprotect, mincore) or write it from one thread at
// a time, and no Rust reference into it exists.
unsafe impl Send for AnonMap {}
// SAFETY: as above.
unsafe impl Sync for AnonMap {}

impl AnonMap {
    /// `len` bytes, with `flags` added to MAP_PRIVATE | MAP_ANONYMOUS.
    pub fn new(len: usize, flags: i32) -> std::io::Result<AnonMap> {
        // SAFETY: a fresh private anonymous mapping with no address hint
        // cannot alias any Rust object.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(AnonMap { addr, len })
    }

    /// Writes one byte into each `page`-sized page, so that every PTE is
    /// populated.
    pub fn touch(&self, page: usize) {
        let base = self.addr.cast::<u8>();
        for off in (0..self.len).step_by(page) {
            // SAFETY: off < len; the mapping is readable and writable and
            // only the calling thread writes it.
            unsafe { base.add(off).write_volatile(1) };
        }
    }

    /// munmap now, with its error.
    pub fn unmap(self) -> std::io::Result<()> {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: unmaps exactly the mapping created in new(); the
        // ManuallyDrop keeps drop() from unmapping it again.
        if unsafe { libc::munmap(me.addr, me.len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in new().
        unsafe { libc::munmap(self.addr, self.len) };
    }
}
