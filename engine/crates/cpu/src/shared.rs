//! A raw view of a mutable slice that pool threads write at disjoint indices.

use std::marker::PhantomData;

/// Shared write access to a `&mut [T]` for threads that touch disjoint elements.
pub(crate) struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _life: PhantomData<&'a mut [T]>,
}

// SAFETY: users promise disjoint access (see `get_mut`); T: Send suffices.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}
unsafe impl<T: Send> Send for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    pub(crate) fn new(s: &'a mut [T]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _life: PhantomData,
        }
    }

    /// Element `i`, or `None` past the end.
    ///
    /// # Safety
    /// No two threads may access the same index at the same time.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get_mut(&self, i: usize) -> Option<&mut T> {
        if i < self.len {
            // SAFETY: in bounds; exclusivity per index is the caller's promise.
            Some(unsafe { &mut *self.ptr.add(i) })
        } else {
            None
        }
    }
}
