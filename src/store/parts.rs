//! Cutting a body stream into bounded parts for multipart uploads: backend-neutral (bytes
//! only, no SDK types), so every backend that uploads in parts (S3 today, GCS resumable or
//! Azure block uploads later) bounds its memory the same way. The reader never holds more
//! than one part and the overflow of one body chunk; the backend chooses the part size and
//! how many parts it keeps in flight.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::ByteStream;

/// Cuts a body stream into parts of `part_size` bytes. Each part is one allocation of
/// exactly `part_size` (no doubling growth); a chunk that overflows a part is carried over
/// to the next one without copying.
pub struct PartReader {
    body: ByteStream,
    part_size: usize,
    carry: Option<Bytes>,
    ended: bool,
    /// Bytes read from the body so far.
    total: u64,
}

impl PartReader {
    /// Reads `body` in parts of `part_size` bytes (at least one).
    pub fn new(body: ByteStream, part_size: usize) -> Self {
        Self {
            body,
            part_size: part_size.max(1),
            carry: None,
            ended: false,
            total: 0,
        }
    }

    /// Bytes read from the body so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The next part (full unless the body ended; empty once it has) and whether the body
    /// has ended. Never polls the body again after its end.
    pub async fn next_part(&mut self) -> Result<(BytesMut, bool), std::io::Error> {
        if self.ended && self.carry.is_none() {
            return Ok((BytesMut::new(), true));
        }
        let mut buf = BytesMut::with_capacity(self.part_size);
        loop {
            let chunk = match self.carry.take() {
                Some(c) => c,
                None if self.ended => return Ok((buf, true)),
                None => match self.body.next().await {
                    None => {
                        self.ended = true;
                        return Ok((buf, true));
                    }
                    Some(chunk) => {
                        let chunk = chunk?;
                        self.total += chunk.len() as u64;
                        chunk
                    }
                },
            };
            let room = self.part_size - buf.len();
            if chunk.len() < room {
                buf.extend_from_slice(&chunk);
            } else {
                buf.extend_from_slice(&chunk[..room]);
                if chunk.len() > room {
                    self.carry = Some(chunk.slice(room..));
                }
                return Ok((buf, self.ended && self.carry.is_none()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part size the S3 backend uses; any size works the same way.
    const PART_SIZE: usize = 16 * 1024 * 1024;

    fn reader(chunks: Vec<Result<Bytes, std::io::Error>>) -> PartReader {
        PartReader::new(Box::pin(futures_util::stream::iter(chunks)), PART_SIZE)
    }

    fn mib(n: usize, byte: u8) -> Result<Bytes, std::io::Error> {
        Ok(Bytes::from(vec![byte; n * 1024 * 1024]))
    }

    /// Part sizes in MiB and the ended flag, until the reader reports the end.
    async fn cut(mut r: PartReader) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        loop {
            let (part, ended) = r.next_part().await.unwrap();
            assert!(part.len() <= PART_SIZE && part.capacity() <= PART_SIZE);
            out.push((part.len() >> 20, ended));
            if ended {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn parts_are_cut_at_the_part_size_across_chunks() {
        // Chunks straddle part boundaries; the overflow carries over.
        let mut r = reader(vec![mib(10, 1), mib(10, 2), mib(12, 3)]);
        let (first, ended) = r.next_part().await.unwrap();
        assert!(!ended);
        assert_eq!(first.len(), PART_SIZE);
        assert_eq!(&first[..10 << 20], &vec![1u8; 10 << 20][..]);
        assert_eq!(&first[10 << 20..], &vec![2u8; 6 << 20][..]);
        let (second, ended) = r.next_part().await.unwrap();
        assert!(!ended);
        assert_eq!(&second[..4 << 20], &vec![2u8; 4 << 20][..]);
        assert_eq!(&second[4 << 20..], &vec![3u8; 12 << 20][..]);
        // Exactly two parts: the end is only known on the next read, which is empty.
        let (third, ended) = r.next_part().await.unwrap();
        assert!(ended && third.is_empty());
        assert_eq!(r.total(), 32 << 20);
        // And the body is never polled after its end.
        let (again, ended) = r.next_part().await.unwrap();
        assert!(ended && again.is_empty());
    }

    #[tokio::test]
    async fn one_huge_chunk_is_split_and_small_streams_are_one_part() {
        assert_eq!(
            cut(reader(vec![mib(40, 7)])).await,
            [(16, false), (16, false), (8, true)]
        );
        assert_eq!(
            cut(reader(vec![mib(16, 7)])).await,
            [(16, false), (0, true)]
        );
        assert_eq!(cut(reader(vec![])).await, [(0, true)]);
        assert_eq!(
            cut(reader(vec![Ok(Bytes::from("ab")), Ok(Bytes::from("cd"))])).await,
            [(0, true)]
        );
    }

    #[tokio::test]
    async fn a_body_error_is_returned() {
        let mut r = reader(vec![mib(1, 0), Err(std::io::Error::other("child died"))]);
        let err = r.next_part().await.err().unwrap();
        assert_eq!(err.to_string(), "child died");
    }
}
