//! Feature probing (`lockscope doctor`).
