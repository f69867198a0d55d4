//! Interruption (Ctrl-C, SIGTERM, SIGHUP) as an ordinary error.
//!
//! The command line installs handlers that only set a flag. Every write loop checks it, so an
//! interrupted rewrite fails like any other error: the staged output is removed on the way out and
//! the destination is untouched. A second signal of the same kind takes the default action (the
//! handlers are reset after the first), so a stuck process can still be killed.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers (the binary calls this once; a library caller keeps its own handling).
/// SIGXFSZ (a file-size limit reached) is ignored so that the write fails with EFBIG and is
/// cleaned up like any other write error, instead of killing the process mid-write.
pub fn install_handlers() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    #[cfg(unix)]
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the struct is
        // fully initialised before use.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Err once a signal asked the process to stop.
pub fn check() -> std::io::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted by a signal",
        ))
    } else {
        Ok(())
    }
}

/// Whether a signal asked the process to stop.
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
