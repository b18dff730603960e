//! Wakes an idle shard when a command is queued: an eventfd the shard's loop waits on beside its
//! socket. Without it a command waited for the next datagram or the loop's 10 ms timer cap.
//!
//! One write per idle period, not per command: `wake` writes only when no wake-up is pending,
//! and the shard clears the pending mark before it drains its command queue, so a command
//! queued after the drain started always writes again.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        // Blocking: io_uring fails a read of a non-blocking descriptor at once (EAGAIN) instead
        // of waiting. Neither side blocks in practice: the fallback reads only after poll(2)
        // reported it readable, and one write per idle period never fills the counter.
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            // SAFETY: a fresh descriptor this struct now owns alone.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
        })
    }

    /// From any thread, after queueing a command.
    pub(crate) fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            unsafe {
                libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        }
    }

    /// On the shard, before draining the command queue.
    pub(crate) fn clear(&self) {
        self.pending.store(false, Ordering::Release);
    }

    /// Resets the eventfd's counter: the fallback loop, once poll(2) reported it readable (it
    /// would block otherwise); io_uring reads it itself.
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64.
        unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8);
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(w: &Waker) -> bool {
        let mut p = libc::pollfd {
            fd: w.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn one_write_per_idle_period_and_none_lost() {
        let w = Waker::new().unwrap();
        assert!(!readable(&w));
        w.wake();
        w.wake();
        assert!(readable(&w));
        w.drain();
        assert!(!readable(&w));
        // Still pending, so a second wake before the shard cleared writes nothing...
        w.wake();
        assert!(!readable(&w));
        // ...and once it cleared (about to drain its queue), the next command wakes it again.
        w.clear();
        w.wake();
        assert!(readable(&w));
    }
}
