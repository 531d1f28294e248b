//! Reading the newest transaction time out of an archived WAL segment, so the recovery
//! window ends at a point replay provably reaches. PostgreSQL stops a time-targeted
//! recovery before the first commit or abort record whose timestamp is after the target;
//! when no such record exists in the archived WAL, recovery fails ("recovery ended before
//! configured recovery target was reached"). The arrival time of the newest segment is
//! later than anything in it, so the window must end at the newest commit/abort time
//! inside the WAL, which this module finds.
//!
//! Only what that needs is parsed: page headers (to join the record stream across pages and
//! to stop at stale or zeroed pages), record headers (each record's CRC-32C and `xl_prev`
//! link are checked, so garbage after the end of WAL is never believed), block reference
//! headers (to find the main data) and the `xact_time` that starts the main data of
//! `RM_XACT_ID` commit and abort records. The formats are those of PostgreSQL 15 to 18
//! (`access/xlogrecord.h`, `access/xlog_internal.h`, `access/xact.h`). A segment is
//! external input: anything malformed ends the scan, never a panic.

use chrono::{DateTime, Utc};

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const SHORT_HEADER: usize = 24;
const LONG_HEADER: usize = 40;
const RECORD_HEADER: usize = 24;
const RM_XACT_ID: u8 = 1;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XACT_TIMED: [u8; 4] = [0x00, 0x20, 0x30, 0x40]; // commit, abort, commit/abort prepared
const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10; // pglz, lz4, zstd (PostgreSQL 15+)
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX: i64 = 946_684_800;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The segment's records as one stream: page payloads joined, each mapped back to its
/// LSN, up to the first page that does not belong to this segment.
struct Stream {
    data: Vec<u8>,
    /// (offset in `data`, LSN) of each page's payload start.
    pages: Vec<(usize, u64)>,
    /// Bytes at the start that continue a record from the previous segment.
    skip: usize,
}

fn join_pages(segment: &[u8]) -> Option<Stream> {
    let info = u16_at(segment, 2)?;
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    let seg_size = u32_at(segment, 32)? as usize;
    let block = u32_at(segment, 36)? as usize;
    if !block.is_power_of_two() || !(1024..=65536).contains(&block) || seg_size < block {
        return None;
    }
    let magic = u16_at(segment, 0)?;
    let start = u64_at(segment, 8)?;
    let skip = u32_at(segment, 16)? as usize;
    let mut data = Vec::with_capacity(segment.len().min(seg_size));
    let mut pages = Vec::new();
    for (i, page) in segment.chunks(block).take(seg_size / block).enumerate() {
        if page.len() < block || u16_at(page, 0) != Some(magic) {
            break;
        }
        let addr = start.checked_add((i * block) as u64)?;
        if u64_at(page, 8) != Some(addr) {
            break; // a recycled page of an older segment
        }
        let header = if i == 0 { LONG_HEADER } else { SHORT_HEADER };
        // A page address near the end of the LSN space (hostile input) ends the stream.
        let Some(first_lsn) = addr.checked_add(header as u64) else {
            break;
        };
        pages.push((data.len(), first_lsn));
        data.extend_from_slice(&page[header..]);
    }
    let first_cont = info & XLP_FIRST_IS_CONTRECORD != 0;
    Some(Stream {
        data,
        pages,
        skip: if first_cont { skip } else { 0 },
    })
}

impl Stream {
    /// The LSN of stream offset `at`.
    fn lsn(&self, at: usize) -> Option<u64> {
        let i = self
            .pages
            .partition_point(|(off, _)| *off <= at)
            .checked_sub(1)?;
        let (off, lsn) = *self.pages.get(i)?;
        lsn.checked_add(u64::try_from(at.checked_sub(off)?).ok()?)
    }
}

/// The `xact_time` of a commit/abort record (`record` is the whole record), if it is one.
fn xact_time(record: &[u8]) -> Option<i64> {
    let (info, rmid) = (*record.get(16)?, *record.get(17)?);
    if rmid != RM_XACT_ID || !XACT_TIMED.contains(&(info & XLOG_XACT_OPMASK)) {
        return None;
    }
    let mut at = RECORD_HEADER;
    let main_len = loop {
        let id = *record.get(at)?;
        at += 1;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => break *record.get(at)? as usize,
            XLR_BLOCK_ID_DATA_LONG => break u32_at(record, at)? as usize,
            XLR_BLOCK_ID_ORIGIN => at += 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => at += 4,
            id if id <= XLR_MAX_BLOCK_ID => {
                let fork_flags = *record.get(at)?;
                at += 3; // fork_flags, data_length
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let bimg_info = *record.get(at + 4)?;
                    at += 5; // length, hole_offset, bimg_info
                    if bimg_info & BKPIMAGE_HAS_HOLE != 0 && bimg_info & BKPIMAGE_COMPRESSED != 0 {
                        at += 2;
                    }
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    at += 12; // RelFileLocator
                }
                at += 4; // BlockNumber
            }
            _ => return None,
        }
    };
    let main = record.len().checked_sub(main_len)?;
    let t = u64_at(record, main)? as i64;
    Some(t)
}

/// The newest commit or abort time in `segment` (a whole, decompressed WAL segment), or
/// None when it holds none (or is not a WAL segment).
pub fn newest_xact_time(segment: &[u8]) -> Option<DateTime<Utc>> {
    let stream = join_pages(segment)?;
    let align = |n: usize| n.checked_add(7).map(|n| n & !7);
    let mut at = align(stream.skip)?;
    let mut prev: Option<u64> = None;
    let mut newest: Option<i64> = None;
    while at + RECORD_HEADER <= stream.data.len() {
        let header = &stream.data[at..at + RECORD_HEADER];
        let total = u32_at(header, 0)? as usize;
        if total < RECORD_HEADER {
            break; // zeros: the end of WAL, or the padding after a segment switch
        }
        let Some(record) = stream.data.get(at..at.checked_add(total)?) else {
            break; // continues into the next segment
        };
        let lsn = stream.lsn(at)?;
        if prev.is_some_and(|p| u64_at(record, 8) != Some(p)) {
            break; // not linked to the record before: stale data
        }
        let mut crc_input = Vec::with_capacity(total);
        crc_input.extend_from_slice(&record[RECORD_HEADER..]);
        crc_input.extend_from_slice(&record[..20]);
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &crc_input) as u32;
        if Some(crc) != u32_at(record, 20) {
            break;
        }
        if let Some(t) = xact_time(record) {
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
        prev = Some(lsn);
        at = align(at + total)?;
    }
    let micros = newest?;
    let secs = micros.div_euclid(1_000_000).checked_add(PG_EPOCH_UNIX)?;
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    DateTime::<Utc>::from_timestamp(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-page segment holding `records` after a long header.
    fn segment(records: &[Vec<u8>]) -> Vec<u8> {
        let block = 8192usize;
        let mut seg = vec![0u8; block * 2];
        seg[0..2].copy_from_slice(&0xD116u16.to_le_bytes());
        seg[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        seg[8..16].copy_from_slice(&0x0100_0000u64.to_le_bytes());
        seg[32..36].copy_from_slice(&((block * 2) as u32).to_le_bytes());
        seg[36..40].copy_from_slice(&(block as u32).to_le_bytes());
        let mut at = LONG_HEADER;
        let mut prev = 0u64;
        for r in records {
            let mut r = r.clone();
            let lsn = 0x0100_0000u64 + at as u64;
            r[8..16].copy_from_slice(&prev.to_le_bytes());
            let mut input = r[RECORD_HEADER..].to_vec();
            input.extend_from_slice(&r[..20]);
            let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &input) as u32;
            r[20..24].copy_from_slice(&crc.to_le_bytes());
            seg[at..at + r.len()].copy_from_slice(&r);
            prev = lsn;
            at = (at + r.len() + 7) & !7;
        }
        // The second page: a short header, nothing in it.
        seg[block..block + 2].copy_from_slice(&0xD116u16.to_le_bytes());
        seg[block + 8..block + 16].copy_from_slice(&(0x0100_0000u64 + block as u64).to_le_bytes());
        seg
    }

    fn record(rmid: u8, info: u8, main: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_HEADER];
        r.push(XLR_BLOCK_ID_DATA_SHORT);
        r.push(main.len() as u8);
        r.extend_from_slice(main);
        let total = r.len() as u32;
        r[0..4].copy_from_slice(&total.to_le_bytes());
        r[16] = info;
        r[17] = rmid;
        r
    }

    fn commit(micros: i64) -> Vec<u8> {
        let mut main = micros.to_le_bytes().to_vec();
        main.extend_from_slice(&[0u8; 8]); // xinfo etc.
        record(RM_XACT_ID, 0x00, &main)
    }

    #[test]
    fn finds_the_newest_commit_and_ignores_other_records() {
        let t1 = 817_000_000_000_000i64;
        let seg = segment(&[commit(t1), record(0, 0x10, &[1, 2, 3]), commit(t1 + 5)]);
        let got = newest_xact_time(&seg).map(|t| t.timestamp_micros());
        assert_eq!(got, Some(t1 + 5 + PG_EPOCH_UNIX * 1_000_000));
    }

    #[test]
    fn a_record_with_a_bad_crc_ends_the_scan() {
        let t1 = 817_000_000_000_000i64;
        let mut seg = segment(&[commit(t1), commit(t1 + 9)]);
        // Corrupt the second record's timestamp (after its CRC was computed).
        let second = (LONG_HEADER + commit(0).len() + 7) & !7;
        seg[second + RECORD_HEADER + 2] ^= 0xff;
        let got = newest_xact_time(&seg).map(|t| t.timestamp_micros());
        assert_eq!(got, Some(t1 + PG_EPOCH_UNIX * 1_000_000));
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(newest_xact_time(&[]), None);
        assert_eq!(newest_xact_time(&[0xff; 100]), None);
        let mut seg = segment(&[commit(1)]);
        seg[LONG_HEADER..LONG_HEADER + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(newest_xact_time(&seg), None);
    }
}
