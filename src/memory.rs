//! A hook for the binary's allocator. The library allocates in bulk at a few known moments (the
//! cache's initial list or a relist, `--existing`) and then frees most of it; an allocator that
//! keeps freed memory for reuse (mimalloc does, for speed) would hold that peak as resident memory.
//! The binary registers how to hand it back; the library says when.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers how to return freed memory to the OS (once; later calls are ignored).
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// After a bulk load: returns what the allocator holds unused, if the binary said how.
pub fn release() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}
