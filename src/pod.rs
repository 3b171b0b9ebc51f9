//! Plain-data views of BPF map keys, values and ring-buffer records, at the
//! bottom of the crate (sources and `filelocks` use them; this module
//! imports nothing from the crate).

/// Marker for the generated plain-data types that are safe to view as bytes.
///
/// # Safety
/// Implementors must be `repr(C)`, contain no pointers, references or
/// padding, and accept every bit pattern.
pub unsafe trait Pod: Copy {}
// SAFETY: a primitive integer.
unsafe impl Pod for u64 {}
// SAFETY: a primitive integer.
unsafe impl Pod for u32 {}
// SAFETY: a primitive integer.
unsafe impl Pod for i32 {}

/// Reads a `T` from the start of `b`, if `b` is long enough.
pub fn from_bytes<T: Pod>(b: &[u8]) -> Option<T> {
    if b.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above, T is Pod (any bit pattern is
    // valid) and read_unaligned tolerates any alignment of the buffer.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// The bytes of a `T`, for map keys and values.
pub fn as_bytes<T: Pod>(t: &T) -> &[u8] {
    // SAFETY: T is Pod (no padding, so every byte is initialised) and the
    // slice covers exactly the object borrowed for the slice's lifetime.
    unsafe { std::slice::from_raw_parts((t as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// A NUL-terminated kernel `char[]` as a String.
pub fn comm_str(c: &[i8]) -> String {
    let bytes: Vec<u8> = c
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
