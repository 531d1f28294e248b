//! Splitting pg_basebackup's one tar stream into several tar streams, member by member, so
//! that a restore can download, check, decompress and write them in parallel (one stream
//! per thread) instead of one file after another. Each member — its header, any extension
//! headers before it (GNU long names, pax), its data and padding — goes whole to the
//! stream that has received the fewest bytes so far; each stream ends with its own
//! end-of-archive blocks, so it is a complete tar archive of its own. Nothing is buffered
//! beyond one header block: memory does not grow with the database.

use std::io::Write;

/// Routes the members of a tar stream to several writers.
pub struct TarSplitter<W: Write> {
    outs: Vec<W>,
    /// Bytes routed to each writer.
    sizes: Vec<u64>,
    /// The header block being collected.
    header: Vec<u8>,
    /// Data and padding of the current member still to route.
    remaining: u64,
    /// Where the current member goes; None: to every writer (a pax global header).
    current: Option<usize>,
    /// The last header was an extension header: its member follows it to the same writer.
    extension: bool,
}

/// A tar member's size field: octal, or GNU base-256 for large sizes. None if unreadable.
fn member_size(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(n);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

impl<W: Write> TarSplitter<W> {
    /// A splitter over `outs` (at least one).
    pub fn new(outs: Vec<W>) -> Self {
        let n = outs.len();
        TarSplitter {
            outs,
            sizes: vec![0; n],
            header: Vec::with_capacity(512),
            remaining: 0,
            current: Some(0),
            extension: false,
        }
    }

    fn route(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self.current {
            Some(i) => {
                self.outs[i].write_all(data)?;
                self.sizes[i] += data.len() as u64;
            }
            None => {
                for (out, size) in self.outs.iter_mut().zip(&mut self.sizes) {
                    out.write_all(data)?;
                    *size += data.len() as u64;
                }
            }
        }
        Ok(())
    }

    fn start_member(&mut self) -> std::io::Result<()> {
        let h = std::mem::take(&mut self.header);
        if h.iter().all(|b| *b == 0) {
            // End-of-archive blocks: each stream gets its own in `finish`.
            return Ok(());
        }
        let size = member_size(&h[124..136]).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a tar header with an unreadable size field in the backup stream",
            )
        })?;
        let typeflag = h[156];
        if typeflag == b'g' {
            self.current = None;
        } else if !self.extension || self.current.is_none() {
            let smallest = (0..self.sizes.len()).min_by_key(|i| self.sizes[*i]);
            self.current = Some(smallest.unwrap_or(0));
        }
        self.extension = matches!(typeflag, b'L' | b'K' | b'x');
        self.remaining = size.div_ceil(512).saturating_mul(512);
        self.route(&h)?;
        self.header = h;
        self.header.clear();
        Ok(())
    }

    /// Routes the next bytes of the stream.
    pub fn write_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.route(&buf[..n])?;
                self.remaining -= n as u64;
                buf = &buf[n..];
                continue;
            }
            let n = (512 - self.header.len()).min(buf.len());
            self.header.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.header.len() == 512 {
                self.start_member()?;
            }
        }
        Ok(())
    }

    /// Ends every stream with end-of-archive blocks and returns the writers; an error if
    /// the input stopped inside a member.
    pub fn finish(mut self) -> std::io::Result<Vec<W>> {
        if self.remaining > 0 || !self.header.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the backup stream ended inside a tar member",
            ));
        }
        for out in &mut self.outs {
            out.write_all(&[0u8; 1024])?;
        }
        Ok(self.outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut ar = tar::Builder::new(Vec::new());
        let long = format!("base/1/{}", "n".repeat(150));
        for (name, size) in [
            ("PG_VERSION", 3usize),
            ("base/1/16384", 300_000),
            ("base/1/16385", 8192),
            (long.as_str(), 700),
            ("global/pg_control", 8192),
            ("backup_label", 200),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(size as u64);
            h.set_mode(0o600);
            let body = vec![name.len() as u8; size];
            ar.append_data(&mut h, name, &body[..]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o700);
        h.set_size(0);
        ar.append_data(&mut h, "pg_wal", &[][..]).unwrap();
        ar.into_inner().unwrap()
    }

    fn members(data: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut ar = tar::Archive::new(data);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (name, body)
            })
            .collect()
    }

    #[test]
    fn every_member_lands_whole_in_exactly_one_stream_whatever_the_chunking() {
        let data = archive();
        let mut want = members(&data);
        want.sort();
        for chunk in [1, 7, 512, 4096, 1 << 20] {
            let mut split = TarSplitter::new(vec![Vec::new(), Vec::new(), Vec::new()]);
            for c in data.chunks(chunk) {
                split.write_all(c).unwrap();
            }
            let outs = split.finish().unwrap();
            let mut got: Vec<(String, Vec<u8>)> = outs.iter().flat_map(|o| members(o)).collect();
            got.sort();
            assert_eq!(got, want, "chunk {chunk}");
            // The big file goes alone; the others share the remaining streams.
            assert!(outs.iter().all(|o| !members(o).is_empty()), "chunk {chunk}");
        }
    }

    #[test]
    fn a_stream_cut_inside_a_member_is_an_error() {
        let data = archive();
        let mut split = TarSplitter::new(vec![Vec::new(), Vec::new()]);
        split.write_all(&data[..5000]).unwrap();
        assert!(split.finish().is_err());
    }

    #[test]
    fn sizes_are_octal_or_base_256() {
        assert_eq!(member_size(b"00000001750\0"), Some(1000));
        assert_eq!(member_size(b"\0\0\0\0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 2; // 2 << 32
        assert_eq!(member_size(&big), Some(2 << 32));
        assert_eq!(member_size(b"zz"), None);
    }
}
