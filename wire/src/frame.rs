//! Frames on a stream: a 4-byte big-endian body length, then the body (one encoded
//! message, see [`crate::codec`]).
//!
//! The reader checks the announced length before allocating: zero is
//! [`Error::EmptyFrame`] (no message encodes to nothing), more than [`MAX_FRAME`] is
//! [`Error::FrameTooLarge`]. A stream that ends before the first header byte is
//! [`Error::Closed`]; one that ends later is [`Error::Io`] (`UnexpectedEof`).
//!
//! The writer sends header and body in one `write_all` (one TLS record for small
//! messages) and flushes. Frame buffers, which may hold PINs or shares, are zeroized after
//! use.
//!
//! Timeouts are the caller's job: these functions wait as long as the stream does. Wrap the
//! async ones in `tokio::time::timeout` and give blocking streams read and write timeouts
//! (`TcpStream::set_read_timeout`); a timeout may leave a frame half read or half written,
//! so drop the connection after one.

use std::io::{self, Read, Write};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use crate::codec::{self, Message};
use crate::{Error, MAX_FRAME};

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// Reads one frame and decodes it as a `T`.
///
/// # Errors
///
/// [`Error::Closed`] if the stream ends cleanly before the frame, [`Error::EmptyFrame`]
/// and [`Error::FrameTooLarge`] for a bad header (nothing is allocated for it), else the
/// stream's or [`codec::decode`]'s errors.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<T, Error>
where
    R: AsyncRead + Unpin + ?Sized,
    T: Message,
{
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while let Some(rest) = header.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        let n = reader.read(rest).await?;
        filled = advance_header(filled, n)?;
    }
    let len = body_len(header)?;
    let mut body = Zeroizing::new(vec![0u8; len]);
    reader.read_exact(&mut body).await?;
    codec::decode(&body)
}

/// Encodes `msg` and writes it as one frame, then flushes.
///
/// # Errors
///
/// [`codec::encode`]'s errors (then nothing is written), or the stream's.
pub async fn write_frame<W, T>(writer: &mut W, msg: &T) -> Result<(), Error>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Message,
{
    let frame = encode_frame(msg)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame from a blocking stream and decodes it as a `T`; see [`read_frame`].
///
/// # Errors
///
/// As [`read_frame`].
pub fn read_frame_blocking<R, T>(reader: &mut R) -> Result<T, Error>
where
    R: Read + ?Sized,
    T: Message,
{
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while let Some(rest) = header.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        let n = match reader.read(rest) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        filled = advance_header(filled, n)?;
    }
    let len = body_len(header)?;
    let mut body = Zeroizing::new(vec![0u8; len]);
    reader.read_exact(&mut body)?;
    codec::decode(&body)
}

/// Encodes `msg` and writes it as one frame to a blocking stream, then flushes; see
/// [`write_frame`].
///
/// # Errors
///
/// As [`write_frame`].
pub fn write_frame_blocking<W, T>(writer: &mut W, msg: &T) -> Result<(), Error>
where
    W: Write + ?Sized,
    T: Message,
{
    let frame = encode_frame(msg)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

/// Header and body of `msg` in one zeroizing buffer. The body is encoded straight into it,
/// at its final size, so no partial copy is left behind by reallocation.
fn encode_frame<T: Message>(msg: &T) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut frame = Zeroizing::new(vec![0u8; HEADER_LEN]);
    codec::encode_into(msg, &mut frame)?;
    let len = u32::try_from(frame.len().saturating_sub(HEADER_LEN))
        .map_err(|_| Error::Invalid("frame length does not fit the header"))?;
    if let Some(header) = frame.get_mut(..HEADER_LEN) {
        header.copy_from_slice(&len.to_be_bytes());
    }
    Ok(frame)
}

/// Counts `n` more header bytes after `filled`; a read of zero bytes is the end of the
/// stream.
fn advance_header(filled: usize, n: usize) -> Result<usize, Error> {
    match (filled, n) {
        (0, 0) => Err(Error::Closed),
        (_, 0) => Err(Error::Io(io::ErrorKind::UnexpectedEof.into())),
        _ => Ok(filled + n),
    }
}

/// The body length a header announces, if it is acceptable.
/// The body length a frame header announces, checked against [`MAX_FRAME`] (and not zero).
///
/// For servers that read the header and the body under different timeouts.
///
/// # Errors
///
/// [`Error::EmptyFrame`] or [`Error::FrameTooLarge`].
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(header);
    if len == 0 {
        return Err(Error::EmptyFrame);
    }
    match usize::try_from(len) {
        Ok(len) if len <= MAX_FRAME => Ok(len),
        _ => Err(Error::FrameTooLarge {
            len: u64::from(len),
            max: MAX_FRAME,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::{sample_requests, sample_responses};
    use crate::{Request, Response};

    /// A reader that yields `data`, then fails the test if read again: proves that nothing
    /// past the header was requested.
    struct HeaderOnly<'a>(&'a [u8]);

    impl Read for HeaderOnly<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(!self.0.is_empty(), "read past the header");
            let n = Read::read(&mut self.0, buf)?;
            Ok(n)
        }
    }

    #[test]
    fn blocking_round_trip() {
        let mut stream = Vec::new();
        for req in sample_requests().unwrap() {
            write_frame_blocking(&mut stream, &req).unwrap();
        }
        let mut reader = stream.as_slice();
        for req in sample_requests().unwrap() {
            assert_eq!(read_frame_blocking::<_, Request>(&mut reader).unwrap(), req);
        }
        assert!(matches!(
            read_frame_blocking::<_, Request>(&mut reader),
            Err(Error::Closed)
        ));
    }

    #[tokio::test]
    async fn async_round_trip_over_a_pipe() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = async {
            for resp in sample_responses().unwrap() {
                write_frame(&mut client, &resp).await.unwrap();
            }
            drop(client);
        };
        let reader = async {
            let mut got = Vec::new();
            loop {
                match read_frame::<_, Response>(&mut server).await {
                    Ok(resp) => got.push(resp),
                    Err(Error::Closed) => break got,
                    Err(err) => panic!("{err}"),
                }
            }
        };
        let ((), got) = tokio::join!(writer, reader);
        assert_eq!(got, sample_responses().unwrap());
    }

    #[test]
    fn header_is_big_endian_length() {
        let mut stream = Vec::new();
        write_frame_blocking(&mut stream, &Request::Logout).unwrap();
        assert_eq!(stream, [0, 0, 0, 4, 2, 0, 0, 0]);
    }

    #[test]
    fn four_gib_header_fails_before_allocating() {
        let header = [0xff; HEADER_LEN];
        let result = read_frame_blocking::<_, Request>(&mut HeaderOnly(&header));
        assert!(matches!(
            result,
            Err(Error::FrameTooLarge {
                len: 0xffff_ffff,
                max: MAX_FRAME
            })
        ));
        let just_over = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
        let result = read_frame_blocking::<_, Request>(&mut HeaderOnly(&just_over));
        assert!(matches!(result, Err(Error::FrameTooLarge { .. })));
    }

    #[tokio::test]
    async fn four_gib_header_fails_before_allocating_async() {
        let mut reader: &[u8] = &[0xff; HEADER_LEN];
        let result = read_frame::<_, Response>(&mut reader).await;
        assert!(matches!(result, Err(Error::FrameTooLarge { .. })));
    }

    #[test]
    fn empty_frame_is_rejected() {
        let result = read_frame_blocking::<_, Request>(&mut HeaderOnly(&[0; HEADER_LEN]));
        assert!(matches!(result, Err(Error::EmptyFrame)));
    }

    #[test]
    fn truncation_is_an_error_not_a_close() {
        let mut stream = Vec::new();
        write_frame_blocking(&mut stream, &sample_requests().unwrap()[0]).unwrap();
        for end in 1..stream.len() {
            match read_frame_blocking::<_, Request>(&mut &stream[..end]) {
                Err(Error::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof),
                other => panic!("prefix of {end} bytes gave {other:?}"),
            }
        }
    }

    #[test]
    fn header_split_across_reads_is_reassembled() {
        /// Yields one byte per read, and an `Interrupted` error before each.
        struct Trickle<'a>(&'a [u8], bool);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                let n = buf.len().min(1);
                let (head, tail) = self.0.split_at(n.min(self.0.len()));
                buf[..head.len()].copy_from_slice(head);
                self.0 = tail;
                Ok(head.len())
            }
        }
        let mut stream = Vec::new();
        write_frame_blocking(&mut stream, &Request::Status).unwrap();
        let got: Request = read_frame_blocking(&mut Trickle(&stream, false)).unwrap();
        assert_eq!(got, Request::Status);
    }

    #[test]
    fn invalid_messages_are_not_written() {
        let long = Request::Hello {
            protocol_version: 1,
            client_name: "n".repeat(crate::limits::MAX_NAME_LEN + 1),
        };
        let mut stream = Vec::new();
        assert!(write_frame_blocking(&mut stream, &long).is_err());
        assert!(stream.is_empty());
    }
}
