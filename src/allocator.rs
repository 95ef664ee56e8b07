//! The process's allocator: mimalloc, asked for alignment only where an allocation needs more
//! than every block already has.
//!
//! Guarantee: the same blocks as `mimalloc::MiMalloc` gives (mimalloc's heap, its memory
//! accounting and release), through cheaper calls. `MiMalloc` hands every allocation to
//! `mi_malloc_aligned`, whose fast path only serves blocks of up to 1 KB; any larger one (a
//! record, a webhook body, hyper's buffers, a comparison's tape) went through its generic
//! aligned path and over-allocated, 250 to 570 instructions where plain `mi_malloc` takes a
//! fraction of that (see docs/performance.md). Like Rust's own `System` allocator, this asks
//! for an alignment only when the layout's is above what `mi_malloc` guarantees: 16 bytes on
//! 64-bit targets, and the block's size for smaller blocks (mimalloc's size classes are
//! multiples of 8 up to 16 bytes).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment `mi_malloc` gives every block of at least that size (mimalloc's
/// `MI_MAX_ALIGN_SIZE`: `alignof(max_align_t)` on the targets we build for).
const MIN_ALIGN: usize = 16;

/// mimalloc, as the `#[global_allocator]` of the binary and the benchmarks.
pub struct Mimalloc;

/// True when `mi_malloc(size)` is aligned enough for `align` on its own.
#[inline(always)]
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

type Alloc = unsafe extern "C" fn(usize) -> *mut c_void;
type AlignedAlloc = unsafe extern "C" fn(usize, usize) -> *mut c_void;

/// A block for `layout` from `unaligned` (`mi_malloc`, `mi_zalloc`) when [`plain`], from
/// `aligned` (their `_aligned` forms) otherwise.
///
/// # Safety
/// Both must be mimalloc's allocation functions, as named above.
#[inline(always)]
unsafe fn allocate(layout: Layout, unaligned: Alloc, aligned: AlignedAlloc) -> *mut u8 {
    // SAFETY: mimalloc's allocation functions take any size and a power-of-two alignment,
    // which a `Layout`'s is.
    unsafe {
        if plain(layout.align(), layout.size()) {
            unaligned(layout.size()).cast()
        } else {
            aligned(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY: every method forwards to mimalloc, which returns null or a block of at least the
// requested size, aligned as `plain` reasons above or as explicitly requested; `dealloc` and
// `realloc` are given only pointers this allocator returned (GlobalAlloc's contract), and
// `mi_free`/`mi_realloc` accept any block of mimalloc's, aligned or not.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's own functions.
        unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's own functions.
        unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_as_their_layouts_ask() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1, 3, 8, 15, 16, 17, 100, 1000, 1025, 1500, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; every block is freed with its layout.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    p.write_bytes(0xA5, size);
                    let q = Mimalloc.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc {size}, align {align}");
                    assert_eq!(*q.add(size - 1), 0xA5);
                    Mimalloc.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
