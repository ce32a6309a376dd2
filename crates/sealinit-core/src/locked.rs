//! Locked memory for secrets: the one module of `sealinit-core` with
//! `unsafe` (mmap, mlock, madvise), each block with a `SAFETY:` comment.
#![allow(unsafe_code)]

use std::io;
use std::ptr::{self, NonNull};

use zeroize::Zeroize;

/// Anonymous pages that hold a secret: locked against swapping (`mlock`),
/// excluded from core dumps (`MADV_DONTDUMP`), wiped and unmapped on drop.
/// The capacity is fixed at creation, so the bytes are never moved by a
/// reallocation that would leave a copy behind.
pub struct LockedPages {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    locked: bool,
}

// SAFETY: `LockedPages` owns its mapping alone (nothing else holds the
// pointer), and the mapping and its lock belong to the process, not to a
// thread: moving it to another thread (a store handed between the
// service's blocking threads) cannot create aliasing or a data race.
unsafe impl Send for LockedPages {}

// SAFETY: every method that writes the mapping takes `&mut self`; through
// `&LockedPages` the pages are only read, so threads sharing it (the egress
// proxy's connections reading a launch's values) cannot race.
unsafe impl Sync for LockedPages {}

impl LockedPages {
    /// Maps `len` zeroed bytes (rounded up to whole pages, at least one).
    pub fn new(len: usize) -> io::Result<Self> {
        let page = page_size();
        let map_len = len
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a fresh private anonymous mapping with no address hint; it
        // cannot alias any existing Rust object.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `p .. p + map_len` is the mapping created above and owned
        // by us; mlock and madvise only change its paging attributes.
        let locked = unsafe { libc::mlock(p, map_len) } == 0;
        // SAFETY: as above. Failure (old kernel) only means the pages may
        // appear in a core dump, which `harden_self` disables anyway.
        unsafe { libc::madvise(p, map_len, libc::MADV_DONTDUMP) };
        let ptr = NonNull::new(p.cast::<u8>()).expect("mmap never returns NULL on success");
        Ok(Self {
            ptr,
            len,
            map_len,
            locked,
        })
    }

    /// Whether `mlock` succeeded (it can fail under a low `RLIMIT_MEMLOCK`).
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Shortens the visible length; the bytes beyond stay mapped and are
    /// wiped on drop with the rest.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is valid, initialised (zero-filled by the
        // kernel) and exclusively owned for `map_len >= len` bytes for as long
        // as `self` lives; the shared borrow of `self` prevents mutation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the unique borrow of `self` makes this
        // the only live reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for LockedPages {
    fn drop(&mut self) {
        // SAFETY: the whole mapping is ours and initialised; no borrow of it
        // can outlive `self`.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.map_len) };
        all.zeroize();
        // SAFETY: unlocking and unmapping exactly the range mapped in `new`;
        // nothing refers to it any more.
        unsafe {
            libc::munlock(self.ptr.as_ptr().cast(), self.map_len);
            libc::munmap(self.ptr.as_ptr().cast(), self.map_len);
        }
    }
}

impl std::fmt::Debug for LockedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockedPages({} bytes, redacted)", self.len)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as usize } else { 4096 }
}

/// The system allocator, wiping every block it frees (and the old block of
/// every reallocation) before handing it back: what a process held, a
/// value included, does not linger in freed heap for the next allocation
/// or a later read of its memory. For the orchestrator's processes that
/// hold values in buffers they do not own (hyper's, the egress proxy's
/// matchers): `#[global_allocator] static A: WipeOnFree = WipeOnFree;`.
#[derive(Debug)]
pub struct WipeOnFree;

// SAFETY: every method forwards to `System`, which upholds the
// `GlobalAlloc` contract; the wipe writes only within the block being
// freed (`layout.size()` bytes from `ptr`, which the caller owns until the
// call returns), and `realloc` returns a block of the new layout holding
// the old contents, as the contract asks.
unsafe impl std::alloc::GlobalAlloc for WipeOnFree {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` is a live block of `layout` (the caller's
        // contract): its `layout.size()` bytes may be written, then it is
        // freed as `System` allocated it.
        unsafe {
            std::slice::from_raw_parts_mut(ptr, layout.size()).zeroize();
            std::alloc::System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `new_size` with the old alignment is a valid layout (the
        // caller's contract); the new block is fresh, the old one live:
        // `min(old, new)` bytes are copied between two distinct blocks,
        // then the old one is wiped and freed.
        unsafe {
            let new_layout =
                std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
            let new = std::alloc::System.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
