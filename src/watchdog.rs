//! systemd's service notification protocol (sd_notify(3)) without libsystemd: one datagram per
//! message to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
//!
//! `READY=1` once the pipeline is built (the unit is `Type=notify`), `WATCHDOG=1` from the main
//! loop every half `WATCHDOG_USEC` (`WatchdogSec=`), `STATUS=...` with the shown verdict when it
//! changes (rate-limited), `STOPPING=1` on shutdown. Pings come from the frame loop itself, so a
//! loop that stalls (no frames and no capture timeouts) stops pinging and systemd restarts the
//! service. Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.
//!
//! Nothing is allocated per frame: the messages are formatted once, in [`Notifier::new`].

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::decision::Verdict;

/// Shortest gap between two `STATUS=` messages (systemd logs nothing for them, but there is no
/// point in sending one per frame while a verdict flickers at the window's edge).
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// Shown verdicts in the order of [`status_index`], `None` (waiting) first.
const STATUS_KEYS: [Option<Verdict>; 7] = [
    None,
    Some(Verdict::Normal),
    Some(Verdict::EsrdSuspected),
    Some(Verdict::Indeterminate),
    Some(Verdict::NoSignal),
    Some(Verdict::NoImage),
    Some(Verdict::Fault),
];

fn status_index(verdict: Option<Verdict>) -> usize {
    match verdict {
        None => 0,
        Some(Verdict::Normal) => 1,
        Some(Verdict::EsrdSuspected) => 2,
        Some(Verdict::Indeterminate) => 3,
        Some(Verdict::NoSignal) => 4,
        Some(Verdict::NoImage) => 5,
        Some(Verdict::Fault) => 6,
    }
}

/// The notify socket and the watchdog period, from the environment systemd sets.
pub struct Notifier {
    #[cfg(target_os = "linux")]
    socket: Option<std::os::unix::net::UnixDatagram>,
    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`. None: no watchdog for us.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    /// Index into `statuses` of the last `STATUS=` sent, and when.
    last_status: Option<(usize, Instant)>,
    statuses: Vec<Vec<u8>>,
    /// A failed send is logged once, then ignored: notification never stops the screening.
    warned: std::cell::Cell<bool>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. Never fails: a socket that cannot
    /// be reached is logged and notification is off (systemd then restarts a `Type=notify`
    /// service that never gets ready, which is the right outcome).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        match Self::new(socket.as_deref(), usec.as_deref(), pid.as_deref(), std::process::id()) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("{e:#}; systemd notification is off");
                Self::disabled()
            }
        }
    }

    /// No socket: every call does nothing.
    pub fn disabled() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            socket: None,
            ping_every: None,
            last_ping: None,
            last_status: None,
            statuses: Vec::new(),
            warned: std::cell::Cell::new(false),
        }
    }

    /// `socket`: `NOTIFY_SOCKET`; `watchdog_usec` / `watchdog_pid`: `WATCHDOG_USEC` /
    /// `WATCHDOG_PID` (a watchdog meant for another process is ignored, as sd_watchdog_enabled
    /// does); `own_pid`: this process.
    pub fn new(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Result<Self> {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Ok(Self::disabled());
        };
        let ping_every = match watchdog_usec {
            None => None,
            Some(usec) => {
                let usec: u64 =
                    usec.trim().parse().with_context(|| format!("WATCHDOG_USEC = {usec:?} is not a number"))?;
                let for_us = match watchdog_pid {
                    None => true,
                    Some(pid) => pid.trim().parse::<u32>().is_ok_and(|p| p == own_pid),
                };
                (usec > 0 && for_us).then(|| Duration::from_micros(usec / 2))
            }
        };
        let statuses = STATUS_KEYS
            .iter()
            .map(|v| {
                let shown = v.map_or("waiting for a stable verdict", Verdict::label);
                format!("STATUS=shown: {shown} (screening aid, not a diagnosis)").into_bytes()
            })
            .collect();
        #[cfg(not(target_os = "linux"))]
        let _ = socket;
        Ok(Self {
            #[cfg(target_os = "linux")]
            socket: Some(connect(socket)?),
            ping_every,
            last_ping: None,
            last_status: None,
            statuses,
            warned: std::cell::Cell::new(false),
        })
    }

    /// True when a notify socket is connected.
    pub fn enabled(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.socket.is_some();
        #[cfg(not(target_os = "linux"))]
        return false;
    }

    /// The `WATCHDOG=1` period (half of `WATCHDOG_USEC`), when systemd watches this process.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.ping_every
    }

    /// `READY=1`: the pipeline is built and the loop starts. Also the first watchdog ping.
    pub fn ready(&mut self) {
        self.send(b"READY=1");
        if self.ping_every.is_some() {
            self.send(b"WATCHDOG=1");
            self.last_ping = Some(Instant::now());
        }
    }

    /// `STOPPING=1`: shutting down on purpose (signal, end of source, error).
    pub fn stopping(&mut self) {
        self.send(b"STOPPING=1");
    }

    /// `STATUS=<text>` now, outside the frame loop (start-up errors); allocates.
    pub fn status(&self, text: &str) {
        if self.enabled() {
            // One line: systemctl status shows the first.
            self.send(format!("STATUS={}", text.replace('\n', " ")).as_bytes());
        }
    }

    /// Once per frame (or capture timeout) from the main loop: `WATCHDOG=1` when half the
    /// watchdog period has passed since the last one, `STATUS=` when the shown verdict changed.
    pub fn frame(&mut self, shown: Option<Verdict>) {
        self.frame_at(Instant::now(), shown);
    }

    /// [`Notifier::frame`] at a given time (tests).
    pub fn frame_at(&mut self, now: Instant, shown: Option<Verdict>) {
        if !self.enabled() {
            return;
        }
        if let Some(every) = self.ping_every
            && self.last_ping.is_none_or(|t| now.saturating_duration_since(t) >= every)
        {
            self.send(b"WATCHDOG=1");
            self.last_ping = Some(now);
        }
        let index = status_index(shown);
        let due = match self.last_status {
            None => true,
            Some((last, at)) => last != index && now.saturating_duration_since(at) >= STATUS_MIN_INTERVAL,
        };
        if due {
            self.send(&self.statuses[index]);
            self.last_status = Some((index, now));
        }
    }

    fn send(&self, message: &[u8]) {
        #[cfg(target_os = "linux")]
        if let Some(socket) = &self.socket
            && let Err(e) = socket.send(message)
            && !self.warned.replace(true)
        {
            log::warn!(
                "cannot notify systemd ({}): {e}; further failures are not logged",
                String::from_utf8_lossy(message)
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = message;
    }
}

/// A datagram socket connected to `NOTIFY_SOCKET`: a filesystem path, or `@name` for a socket
/// in the abstract namespace.
#[cfg(target_os = "linux")]
fn connect(socket: &OsStr) -> Result<std::os::unix::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let bytes = socket.as_bytes();
    let shown = String::from_utf8_lossy(bytes);
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(socket)),
        _ => anyhow::bail!("NOTIFY_SOCKET = {shown:?} is neither a path nor an @abstract name"),
    }
    .with_context(|| format!("NOTIFY_SOCKET = {shown:?}"))?;
    let datagram = UnixDatagram::unbound().context("cannot create a notify socket")?;
    datagram.connect_addr(&addr).with_context(|| format!("cannot connect to NOTIFY_SOCKET {shown}"))?;
    // A full socket buffer must never block the frame loop.
    datagram.set_nonblocking(true).context("notify socket")?;
    Ok(datagram)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    fn receive_all(server: &UnixDatagram) -> Vec<String> {
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        while let Ok(n) = server.recv(&mut buf) {
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        got
    }

    #[test]
    fn ready_then_watchdog_pings_at_half_the_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // WATCHDOG_USEC = 2 s: a ping every second.
        let mut n = Notifier::new(Some(path.as_os_str()), Some("2000000"), None, 1).unwrap();
        assert!(n.enabled());
        assert_eq!(n.watchdog_period(), Some(Duration::from_secs(1)));
        n.ready();
        let t0 = n.last_ping.unwrap();
        let ms = |m| t0 + Duration::from_millis(m);
        n.frame_at(ms(100), None); // first STATUS, no ping yet
        n.frame_at(ms(500), Some(Verdict::Normal)); // verdict changed too soon for a STATUS
        n.frame_at(ms(1000), Some(Verdict::Normal)); // ping
        n.frame_at(ms(1500), Some(Verdict::Normal));
        n.frame_at(ms(2100), Some(Verdict::Normal)); // ping + the held-back STATUS
        n.frame_at(ms(2200), Some(Verdict::Normal)); // nothing
        n.stopping();
        let waiting = "STATUS=shown: waiting for a stable verdict (screening aid, not a diagnosis)";
        let normal = "STATUS=shown: NORMAL (screening aid, not a diagnosis)";
        assert_eq!(
            receive_all(&server),
            ["READY=1", "WATCHDOG=1", waiting, "WATCHDOG=1", "WATCHDOG=1", normal, "STOPPING=1"]
        );
    }

    #[test]
    fn abstract_socket_and_no_watchdog() {
        let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos();
        let name = format!("kidney-screen-test-{}-{nanos}", std::process::id());
        let addr =
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes())
                .unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let socket = format!("@{name}");
        let mut n = Notifier::new(Some(OsStr::new(&socket)), None, None, 1).unwrap();
        n.ready();
        n.frame(Some(Verdict::Fault));
        assert_eq!(receive_all(&server), ["READY=1", "STATUS=shown: FAULT (screening aid, not a diagnosis)"]);
    }

    #[test]
    fn watchdog_for_another_process_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let _server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.as_os_str()), Some("10000000"), Some("1"), 2).unwrap();
        assert_eq!(n.watchdog_period(), None);
        let n = Notifier::new(Some(path.as_os_str()), Some("10000000"), Some("2"), 2).unwrap();
        assert_eq!(n.watchdog_period(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn without_notify_socket_everything_is_a_no_op() {
        let mut n = Notifier::new(None, Some("1000000"), None, 1).unwrap();
        assert!(!n.enabled());
        n.ready();
        n.frame(None);
        n.stopping();
        let err = Notifier::new(Some(OsStr::new("vsock:2:1")), None, None, 1).err().unwrap();
        assert!(format!("{err:#}").contains("vsock:2:1"), "{err:#}");
        let missing = Notifier::new(Some(OsStr::new("/nonexistent/notify")), None, None, 1).err().unwrap();
        assert!(format!("{missing:#}").contains("/nonexistent/notify"), "{missing:#}");
        assert!(Notifier::new(Some(OsStr::new("/x")), Some("soon"), None, 1).is_err());
    }
}
