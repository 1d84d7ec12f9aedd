//! Copying both ways between two TCP sockets with splice(2) (Linux): the bytes move from one
//! socket into a pipe and from the pipe into the other socket without entering userspace.
//!
//! ```text
//!  src ──splice──► pipe (kernel pages) ──splice──► dst        one pipe per direction
//!   └ readable? (tokio readiness)          └ writable?
//!  src EOF ──► pipe drained ──► shutdown(dst, write)          half-close passed on
//! ```
//!
//! Sockets and pipes are non-blocking; tokio's readiness (`readable`/`writable` + `try_io`)
//! decides when to call splice again. A pipe is always emptied before reading more, so an
//! EAGAIN while filling it means "the socket is empty" and one while draining it means "the
//! socket is full". Empty pipes are kept in a small pool for the next connection.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most bytes one splice call asks for (the pipe's capacity bounds it further).
const CHUNK: usize = 1 << 20;
/// Empty pipes kept for reuse.
const POOL_MAX: usize = 64;

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    /// A pipe from the pool or a new one, grown towards `size` bytes when asked (0: as it is).
    fn take(size: usize) -> io::Result<Pipe> {
        let pooled = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let pipe = match pooled {
            Some(pipe) => pipe,
            None => {
                let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
                    .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
                Pipe { read, write }
            }
        };
        if size > 0 {
            let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            let now = fcntl(pipe.write.as_fd(), FcntlArg::F_GETPIPE_SZ).unwrap_or(want);
            if now < want {
                // Refused over the per-user pipe limits: the pipe keeps its size.
                let _ = fcntl(pipe.write.as_fd(), FcntlArg::F_SETPIPE_SZ(want));
            }
        }
        Ok(pipe)
    }

    /// Returns an empty pipe to the pool (a pipe holding bytes is closed instead).
    fn give_back(self) {
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(self);
        }
    }
}

/// Copies `a` → `b` and `b` → `a` until both directions have seen end of file (each passed on
/// as a shutdown of the other socket's sending half), through pipes of `pipe_size` bytes (0:
/// the kernel's default). Returns the bytes moved each way.
/// `ErrorKind::Unsupported` means no pipe could be made and nothing was moved.
pub(super) async fn copy_bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    pipe_size: usize,
) -> io::Result<(u64, u64)> {
    let pipe_ab = Pipe::take(pipe_size)?;
    let pipe_ba = match Pipe::take(pipe_size) {
        Ok(p) => p,
        Err(e) => {
            pipe_ab.give_back();
            return Err(e);
        }
    };
    tokio::try_join!(one_way(a, b, pipe_ab), one_way(b, a, pipe_ba))
}

async fn one_way(src: &TcpStream, dst: &TcpStream, pipe: Pipe) -> io::Result<u64> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut total = 0u64;
    loop {
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                splice(src.as_fd(), None, pipe.write.as_fd(), None, CHUNK, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // End of file: pass the half-close on. The peer may already be gone entirely.
            match nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(dst),
                nix::sys::socket::Shutdown::Write,
            ) {
                Ok(()) | Err(nix::errno::Errno::ENOTCONN) => {}
                Err(e) => return Err(e.into()),
            }
            pipe.give_back();
            return Ok(total);
        }
        let mut pending = n;
        while pending > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_fd(), None, dst.as_fd(), None, pending, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => pending -= w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
}
