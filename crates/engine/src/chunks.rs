//! A response body written by blocking code (a tar being made on a blocking thread): what it
//! writes goes out in large chunks through a bounded channel, with one copy, where a pipe
//! (`tokio::io::duplex`) would copy each byte twice more.

use std::io;

use berth_api::params::ByteStream;
use bytes::{Bytes, BytesMut};

const CHUNK: usize = 1 << 20;

/// The writing end; give it to the blocking producer. Dropping it ends the stream.
pub struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        // The client went away: stop producing.
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client stopped reading"))
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// A writer for blocking code and the stream of what it writes. A few chunks are in flight at
/// most: a slow client slows the producer rather than filling memory.
pub fn channel() -> (ChunkWriter, ByteStream) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (ChunkWriter { tx, buf: BytesMut::with_capacity(CHUNK) }, Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn what_is_written_comes_out_in_order_and_whole() {
        let (mut w, mut s) = channel();
        let producer = tokio::task::spawn_blocking(move || {
            for i in 0..3000u32 {
                io::Write::write_all(&mut w, &i.to_le_bytes().repeat(100)).unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        producer.await.unwrap();
        let want: Vec<u8> = (0..3000u32).flat_map(|i| i.to_le_bytes().repeat(100)).collect();
        assert_eq!(got, want);
    }
}
