//! systemd's service notifications (`Type=notify`), outside the data flow:
//! the binary says READY=1 once the ports are bound and the log file open,
//! STOPPING=1 when a shutdown starts, and pings the watchdog while every
//! server thread is alive.
//!
//! The protocol is one datagram per message to the Unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name after `@`); without that
//! variable (not under systemd) every call is a no-op. Written against the
//! socket directly: a few lines, no library.

use std::{
    io,
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

/// Where notifications go, if anywhere.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// `WatchdogSec` as systemd passes it, halved: ping at least this often.
    watchdog: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honouring
    /// `$WATCHDOG_PID`, which names the process the watchdog is for).
    pub fn from_env() -> io::Result<Self> {
        let socket = match std::env::var_os("NOTIFY_SOCKET") {
            Some(name) => Some((UnixDatagram::unbound()?, address(&name)?)),
            None => None,
        };
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && socket.is_some())
            .map(|u| Duration::from_micros(u) / 2);
        Ok(Notifier {
            socket,
            watchdog,
            last_ping: Instant::now(),
        })
    }

    /// Sends `state` (e.g. `READY=1`); false when not under systemd.
    pub fn notify(&self, state: &str) -> io::Result<bool> {
        match &self.socket {
            Some((socket, addr)) => socket.send_to_addr(state.as_bytes(), addr).map(|_| true),
            None => Ok(false),
        }
    }

    /// The watchdog's interval (half of `WatchdogSec`), if it is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Pings the watchdog if half its timeout has passed since the last
    /// ping. Call it only while the server is known to be healthy.
    pub fn keep_alive(&mut self) -> io::Result<()> {
        if let Some(every) = self.watchdog {
            if self.last_ping.elapsed() >= every {
                self.notify("WATCHDOG=1")?;
                self.last_ping = Instant::now();
            }
        }
        Ok(())
    }
}

/// The socket address `$NOTIFY_SOCKET` names.
fn address(name: &std::ffi::OsStr) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::{linux::net::SocketAddrExt as _, unix::ffi::OsStrExt as _};
    match name.as_bytes() {
        [b'@', abstract_name @ ..] => {
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
        }
        path => std::os::unix::net::SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path)),
    }
}
