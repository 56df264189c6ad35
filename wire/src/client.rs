//! The blocking, mutually authenticated TLS connection to one appliance, which the PKCS#11
//! module and the `ittc` CLI build on: connect, `Hello`, then one request and one
//! response at a time. [`TlsIdentity`] (the cluster CA and the member's certificate and
//! key) gives it its configuration.
//!
//! Every step has a time limit ([`Timeouts`]): the TCP connect, the TLS handshake with the
//! `Hello` exchange, and each request (writing it and reading the whole response). A step
//! that overruns fails with [`Error::Timeout`]; nothing waits forever on a silent
//! appliance. After a transport failure the stream may be out of step, so the
//! [`Connection`] refuses further requests ([`Error::Broken`]): open a new one.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

pub use crate::tls::{KeyLoader, TlsCrypto, TlsIdentity};
use crate::{
    Error, HelloInfo, Identity, MAX_APPLIANCES, PROTOCOL_VERSION, Request, Response, Role,
    peer_identity, read_frame_blocking, role_dns_name, write_frame_blocking,
};

/// The longest a dropped connection spends sending its TLS `close_notify`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Time limits of a [`Connection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// For the TCP connect.
    pub connect: Duration,
    /// For the TLS handshake, for the `Hello` exchange, and for each request (writing it
    /// and reading its whole response, not each read: an appliance that trickles bytes
    /// does not extend it).
    pub io: Duration,
}

impl Default for Timeouts {
    /// 3 s to connect, 10 s for each exchange.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            io: Duration::from_secs(10),
        }
    }
}

/// A connection to one appliance, after the TLS handshake and the `Hello` exchange.
///
/// Blocking, one request at a time; not shared between threads without a lock (the
/// module keeps one per appliance and never holds its own locks across a request).
/// Dropping it sends a TLS `close_notify` (best effort, for at most a second).
pub struct Connection {
    channel: Channel,
    hello: HelloInfo,
    peer: Identity,
}

impl Connection {
    /// Connects to appliance `index` at `addr`: TCP connect within `timeouts.connect`,
    /// then within `timeouts.io` the TLS handshake as server name `appliance-{index}.ittc`
    /// ([`role_dns_name`]), then within another `timeouts.io` a [`Request::Hello`] with
    /// [`PROTOCOL_VERSION`] and `client_name`.
    ///
    /// `config` comes from [`crate::TlsIdentity::client_config`]. The appliance's
    /// certificate must chain to its roots and name exactly the role `appliance-{index}`;
    /// the [`HelloInfo`] must carry the same index and this crate's protocol version.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an index outside `1..=`[`MAX_APPLIANCES`]; [`Error::Invalid`]
    /// for a `client_name` longer than [`crate::limits::MAX_NAME_LEN`]; [`Error::Timeout`]; [`Error::Io`] (refused,
    /// reset); [`Error::Certificate`] if the appliance's certificate is rejected (another
    /// CA, another name, expired) or names another role; [`Error::Tls`] if the appliance
    /// aborts the handshake (for example because it rejects our certificate: with TLS 1.3
    /// this shows only when the `Hello` answer is read); [`Error::Refused`] if it answers
    /// `Hello` with an error; [`Error::Protocol`] for any other answer, another index or
    /// another version.
    pub fn connect(
        addr: SocketAddr,
        index: u8,
        config: Arc<ClientConfig>,
        timeouts: Timeouts,
        client_name: &str,
    ) -> Result<Self, Error> {
        let role = Role::Appliance(index);
        if !role.is_valid() {
            return Err(Error::Config(format!(
                "appliance index {index} outside 1..={MAX_APPLIANCES}"
            )));
        }
        let server_name = ServerName::try_from(role_dns_name(role))
            .map_err(|err| Error::Tls(format!("server name: {err}")))?;

        let tcp = TcpStream::connect_timeout(&addr, timeouts.connect)
            .map_err(|err| transport(err.into()))?;
        tcp.set_nodelay(true)?;
        let tls = ClientConnection::new(config, server_name)
            .map_err(|err| Error::Tls(err.to_string()))?;
        let sock = DeadlineStream {
            tcp,
            deadline: deadline(timeouts.io),
        };
        let mut stream = StreamOwned::new(tls, sock);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|err| transport(err.into()))?;
        }

        let peer = peer_identity(&stream.conn)?;
        if peer.role != role {
            return Err(Error::Certificate(format!(
                "dialled appliance {index}, but its certificate names {}",
                peer.role
            )));
        }

        let mut channel = Channel {
            stream,
            io: timeouts.io,
            broken: false,
            awaiting: false,
        };
        let hello = Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: client_name.to_owned(),
        };
        channel.send(&hello)?;
        let hello = match channel.receive()? {
            Response::HelloInfo(info) => info,
            Response::Error(err) => return Err(Error::Refused(err)),
            other => {
                return Err(Error::Protocol(format!(
                    "answered hello with {}",
                    other.kind()
                )));
            }
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Error::Protocol(format!(
                "asked for protocol version {PROTOCOL_VERSION}, appliance speaks {}",
                hello.protocol_version
            )));
        }
        if hello.appliance_index != index {
            return Err(Error::Protocol(format!(
                "dialled appliance {index}, hello answered as appliance {}",
                hello.appliance_index
            )));
        }
        Ok(Self {
            channel,
            hello,
            peer,
        })
    }

    /// What the appliance answered to `Hello`.
    pub fn hello(&self) -> &HelloInfo {
        &self.hello
    }

    /// Who the appliance is, according to its verified certificate.
    pub fn peer(&self) -> &Identity {
        &self.peer
    }

    /// Whether an earlier transport failure made the connection unusable, or a request
    /// sent with [`Connection::send`] still waits for its answer.
    pub fn is_broken(&self) -> bool {
        self.channel.broken || self.channel.awaiting
    }

    /// Whether a connection that has been idle can no longer carry a request: broken, or
    /// the appliance has closed it (its idle timeout) or sent something unasked. A
    /// non-blocking look at the socket that reads nothing; for a connection taken from a
    /// pool, which would otherwise fail its next request.
    pub fn is_stale(&self) -> bool {
        if self.is_broken() {
            return true;
        }
        let tcp = &self.channel.stream.sock.tcp;
        if tcp.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let stale = match tcp.peek(&mut byte) {
            // Closed (0), or an alert or other bytes nobody asked for.
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        tcp.set_nonblocking(false).is_err() || stale
    }

    /// Whether a request was sent on this connection and its answer not read yet.
    pub fn is_awaiting(&self) -> bool {
        self.channel.awaiting && !self.channel.broken
    }

    /// Whether bytes of the awaited answer have arrived (or the appliance closed the
    /// connection): [`Connection::receive`] then does not wait for the appliance. Does not
    /// block.
    pub fn answer_arrived(&self) -> bool {
        self.is_awaiting() && matches!(readable(&[self], Duration::ZERO).as_deref(), Ok([true]))
    }

    /// Reads the answer of a request that was given up on (another appliance answered
    /// instead) once it has arrived, and drops it, so that the connection can take
    /// requests again; within a fresh `io` timeout.
    ///
    /// # Errors
    ///
    /// As [`Connection::receive`].
    pub fn discard_late_answer(&mut self) -> Result<(), Error> {
        self.channel.stream.sock.deadline = deadline(self.channel.io);
        self.channel.receive().map(|_| ())
    }

    /// Sends one request and reads its response, within the `io` timeout.
    ///
    /// A [`Response::Error`] is a successful exchange and comes back as
    /// `Ok(Response::Error(..))`: the caller decides what it means.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] or [`Error::FrameTooLarge`] if `req` breaks a limit (nothing is
    /// sent, the connection stays usable); otherwise, and then the connection is unusable:
    /// [`Error::Timeout`], [`Error::Closed`] if the appliance closed it, [`Error::Io`],
    /// [`Error::Tls`], or a decoding error for a response that is not a valid message.
    /// [`Error::Broken`] if an earlier request failed that way.
    pub fn request(&mut self, req: &Request) -> Result<Response, Error> {
        self.channel.send(req)?;
        self.channel.receive()
    }

    /// The first half of [`Connection::request`]: sends `req` and starts the `io`
    /// timeout, so that the caller can send to other appliances before it waits for
    /// any answer. Until [`Connection::receive`] the connection counts as broken (it must
    /// not go back to a pool out of step).
    ///
    /// # Errors
    ///
    /// As [`Connection::request`]'s sending side.
    pub fn send(&mut self, req: &Request) -> Result<(), Error> {
        self.channel.send(req)
    }

    /// The second half of [`Connection::request`]: reads the answer to the request
    /// [`Connection::send`] sent, by the deadline set then.
    ///
    /// # Errors
    ///
    /// As [`Connection::request`]'s receiving side; [`Error::Broken`] if no request is
    /// waiting for its answer.
    pub fn receive(&mut self) -> Result<Response, Error> {
        self.channel.receive()
    }
}

/// Which of `connections` have bytes to read (or were closed by the appliance), waiting up
/// to `timeout` for the first; all `false` when none has by then. Bytes that the TLS
/// layer already holds do not count: call it only while an answer is awaited and nothing
/// of it was read yet, as after [`Connection::send`].
///
/// # Errors
///
/// The `poll` system call's.
pub fn readable(connections: &[&Connection], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut fds: Vec<PollFd<'_>> = connections
        .iter()
        .map(|c| PollFd::new(&c.channel.stream.sock.tcp, PollFlags::IN))
        .collect();
    let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    rustix::event::poll(&mut fds, Some(&timeout))?;
    Ok(fds
        .iter()
        .map(|fd| {
            fd.revents()
                .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
        })
        .collect())
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("hello", &self.hello)
            .field("broken", &self.channel.broken)
            .finish_non_exhaustive()
    }
}

/// The TLS stream with its request discipline: one frame out, one frame in, within a
/// deadline; any transport failure breaks it for good.
struct Channel {
    stream: StreamOwned<ClientConnection, DeadlineStream>,
    io: Duration,
    broken: bool,
    /// A request was sent and its answer not read yet.
    awaiting: bool,
}

impl Channel {
    fn send(&mut self, req: &Request) -> Result<(), Error> {
        if self.broken || self.awaiting {
            return Err(Error::Broken);
        }
        self.stream.sock.deadline = deadline(self.io);
        if let Err(err) = write_frame_blocking(&mut self.stream, req) {
            // Encoding fails before anything is written: the stream is still in step.
            if matches!(err, Error::Io(_)) {
                self.broken = true;
            }
            return Err(transport(err));
        }
        self.awaiting = true;
        Ok(())
    }

    fn receive(&mut self) -> Result<Response, Error> {
        if self.broken || !self.awaiting {
            return Err(Error::Broken);
        }
        let answer = read_frame_blocking(&mut self.stream).map_err(|err| {
            self.broken = true;
            transport(err)
        });
        self.awaiting = false;
        answer
    }

    /// Sends `close_notify`, so the appliance sees a clean end of stream.
    fn close(&mut self) {
        if self.broken {
            return;
        }
        self.broken = true;
        self.stream.conn.send_close_notify();
        self.stream.sock.deadline = deadline(self.io.min(CLOSE_TIMEOUT));
        while self.stream.conn.wants_write() {
            match self.stream.conn.write_tls(&mut self.stream.sock) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}

impl Drop for Channel {
    /// Also when `connect` gives up after the handshake (a refused or wrong `Hello`).
    fn drop(&mut self) {
        self.close();
    }
}

/// A TCP stream whose reads and writes fail with `TimedOut` once a deadline has passed,
/// and which sets the socket's timeouts to the time left before each one, so that a whole
/// exchange, not each system call, is bounded.
struct DeadlineStream {
    tcp: TcpStream,
    /// `None`: no limit (a timeout too large to add to the clock).
    deadline: Option<Instant>,
}

impl DeadlineStream {
    fn time_left(&self) -> io::Result<Option<Duration>> {
        let Some(deadline) = self.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::ErrorKind::TimedOut.into())
        } else {
            Ok(Some(left))
        }
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.time_left()?;
        self.tcp.set_read_timeout(left)?;
        self.tcp.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.time_left()?;
        self.tcp.set_write_timeout(left)?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Gives transport errors their meaning: a socket timeout is [`Error::Timeout`], an error
/// that rustls raised is [`Error::Certificate`] (the appliance's certificate was rejected)
/// or [`Error::Tls`]; everything else is unchanged.
fn transport(err: Error) -> Error {
    let Error::Io(io) = err else {
        return err;
    };
    if matches!(
        io.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return Error::Timeout;
    }
    match io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
            Error::Certificate("appliance certificate rejected: certificate revoked".into())
        }
        Some(rustls::Error::InvalidCertificate(cert)) => {
            Error::Certificate(format!("appliance certificate rejected: {cert}"))
        }
        Some(alert @ rustls::Error::AlertReceived(_)) => {
            Error::Tls(format!("the appliance ended the connection: {alert}"))
        }
        Some(tls) => Error::Tls(tls.to_string()),
        None => Error::Io(io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timeouts() {
        let t = Timeouts::default();
        assert_eq!(t.connect, Duration::from_secs(3));
        assert_eq!(t.io, Duration::from_secs(10));
    }

    #[test]
    fn socket_timeouts_become_timeout() {
        for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::TimedOut] {
            assert!(matches!(transport(Error::Io(kind.into())), Error::Timeout));
        }
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        assert!(matches!(transport(Error::Io(tls)), Error::Certificate(_)));
        let revoked = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked),
        );
        assert!(
            matches!(transport(Error::Io(revoked)), Error::Certificate(m) if m.contains("certificate revoked"))
        );
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
        );
        assert!(matches!(transport(Error::Io(alert)), Error::Tls(_)));
        let reset = Error::Io(io::ErrorKind::ConnectionReset.into());
        assert!(matches!(transport(reset), Error::Io(_)));
        assert!(matches!(transport(Error::Closed), Error::Closed));
    }

    #[test]
    fn huge_timeouts_mean_no_deadline() {
        assert_eq!(deadline(Duration::MAX), None);
        assert!(deadline(Duration::from_secs(1)).is_some());
    }
}
