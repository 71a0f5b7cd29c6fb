//! The ZIP container of an XDM package, opened defensively.
//!
//! The central directory is walked here first (APPNOTE.TXT 6.3.10 §4.3.12–4.3.16), before
//! the `zip` crate sees the bytes, for three reasons:
//! - the crate tries every end-of-central-directory signature it finds, scanning the
//!   file again for each one, so bytes full of false signatures cost time that grows
//!   with the square of their length; here a file must end in one well-formed record,
//!   and a file with more than a few such signatures is refused;
//! - the crate keeps one entry per name, so two entries with the same name would be
//!   silently merged; here every record is seen and duplicates are refused;
//! - the entry count, names, sizes, encryption and links are all judged before anything
//!   is inflated.
//!
//! Entries are then inflated by the crate (flate2 on miniz_oxide) through a reader that
//! stops one byte past what the limits allow, whatever the headers declare.

use std::collections::HashSet;
use std::io::{Cursor, Read};

use zip::ZipArchive;
use zip::result::ZipError;

use super::XdmLimits;
use super::error::{NameFault, XdmError};

/// Entries that unpack to no more than this are not held to [`XdmLimits::max_ratio`]:
/// small files compress unevenly (a page of blank form compresses 200:1), and their sum
/// is bounded by [`XdmLimits::max_total_size`] anyway.
pub const RATIO_EXEMPT_BYTES: u64 = 1 << 20;

/// More end-of-central-directory signatures than this anywhere in the file is refused as
/// damaged: a real package has one, or a few when it stores other ZIP files uncompressed.
const MAX_EOCD_SIGNATURES: usize = 16;

const LOCAL_HEADER_SIG: &[u8; 4] = b"PK\x03\x04";
const CENTRAL_HEADER_SIG: &[u8; 4] = b"PK\x01\x02";
const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
const EOCD64_LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
const EOCD64_SIG: &[u8; 4] = b"PK\x06\x06";
const EOCD_LEN: usize = 22;
const CENTRAL_HEADER_LEN: usize = 46;

/// One central-directory record, as stored.
#[derive(Debug)]
pub(super) struct Record {
    pub name_raw: Vec<u8>,
    flags: u16,
    made_by_host: u8,
    external_attributes: u32,
    pub compressed_size: u64,
    pub declared_size: u64,
}

impl Record {
    fn encrypted(&self) -> bool {
        self.flags & 1 != 0
    }

    /// A Unix symbolic link: made on Unix (host 3) with the file type bits `S_IFLNK`.
    fn is_symlink(&self) -> bool {
        const S_IFMT: u32 = 0o170_000;
        const S_IFLNK: u32 = 0o120_000;
        self.made_by_host == 3 && (self.external_attributes >> 16) & S_IFMT == S_IFLNK
    }
}

/// The central directory: its records in order, and where it starts in the file.
pub(super) struct Directory {
    pub records: Vec<Record>,
    start: usize,
}

/// Reads every central-directory record, refusing what the limits or the format forbid
/// along the way. Linear in the length of `bytes`.
pub(super) fn central_directory(bytes: &[u8], limits: &XdmLimits) -> Result<Directory, XdmError> {
    let not_found = || {
        if bytes.starts_with(LOCAL_HEADER_SIG) {
            XdmError::Truncated
        } else {
            XdmError::NotZip
        }
    };
    let signatures = bytes.windows(4).filter(|w| w == EOCD_SIG).count();
    if signatures > MAX_EOCD_SIGNATURES {
        return Err(XdmError::Damaged);
    }
    // APPNOTE §4.3.16: the record is 22 bytes plus a comment of up to 65535 bytes, and
    // ends the file. The last signature is the one the zip crate tries first.
    let eocd = last_position(bytes, EOCD_SIG).ok_or_else(not_found)?;
    let comment_len = usize::from(u16_at(bytes, eocd + 20).ok_or_else(not_found)?);
    if eocd + EOCD_LEN + comment_len != bytes.len() {
        return Err(not_found());
    }
    let disk = u16_at(bytes, eocd + 4).ok_or(XdmError::Damaged)?;
    let cd_disk = u16_at(bytes, eocd + 6).ok_or(XdmError::Damaged)?;
    let mut on_disk = u64::from(u16_at(bytes, eocd + 8).ok_or(XdmError::Damaged)?);
    let mut count = u64::from(u16_at(bytes, eocd + 10).ok_or(XdmError::Damaged)?);
    let mut cd_size = u64::from(u32_at(bytes, eocd + 12).ok_or(XdmError::Damaged)?);
    let cd_offset = u32_at(bytes, eocd + 16).ok_or(XdmError::Damaged)?;
    if disk != 0 || cd_disk != 0 {
        // Multi-volume archives; never an XDM package sent by mail.
        return Err(XdmError::Damaged);
    }
    let mut cd_end = eocd;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // APPNOTE §4.3.14–4.3.15: ZIP64 end record, found through its locator.
        let locator = eocd.checked_sub(20).ok_or(XdmError::Damaged)?;
        if bytes.get(locator..locator + 4) != Some(EOCD64_LOCATOR_SIG) {
            return Err(XdmError::Damaged);
        }
        let record = u64_at(bytes, locator + 8).ok_or(XdmError::Damaged)?;
        let record = usize::try_from(record).map_err(|_| XdmError::Damaged)?;
        if record >= locator || bytes.get(record..record + 4) != Some(EOCD64_SIG) {
            return Err(XdmError::Damaged);
        }
        on_disk = u64_at(bytes, record + 24).ok_or(XdmError::Damaged)?;
        count = u64_at(bytes, record + 32).ok_or(XdmError::Damaged)?;
        cd_size = u64_at(bytes, record + 40).ok_or(XdmError::Damaged)?;
        cd_end = record;
    }
    // The zip crate counts the entries "on this disk", APPNOTE the total; in a
    // single-volume archive they are the same.
    if on_disk != count {
        return Err(XdmError::Damaged);
    }
    if count > u64::try_from(limits.max_entries).unwrap_or(u64::MAX) {
        return Err(XdmError::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    let cd_size = usize::try_from(cd_size).map_err(|_| XdmError::Damaged)?;
    let cd_start = cd_end.checked_sub(cd_size).ok_or_else(not_found)?;

    let mut records = Vec::new();
    let mut at = cd_start;
    for _ in 0..count {
        let (record, next) = central_record(bytes, at, cd_end)?;
        records.push(record);
        at = next;
    }
    if at != cd_end {
        return Err(XdmError::Damaged);
    }
    Ok(Directory {
        records,
        start: cd_start,
    })
}

/// The record at `at`, and where the next one starts.
fn central_record(bytes: &[u8], at: usize, end: usize) -> Result<(Record, usize), XdmError> {
    let header = bytes
        .get(at..at + CENTRAL_HEADER_LEN)
        .filter(|_| at + CENTRAL_HEADER_LEN <= end)
        .ok_or(XdmError::Damaged)?;
    if &header[..4] != CENTRAL_HEADER_SIG {
        return Err(XdmError::Damaged);
    }
    let field16 = |offset: usize| u16::from_le_bytes([header[offset], header[offset + 1]]);
    let field32 = |offset: usize| {
        u32::from_le_bytes([
            header[offset],
            header[offset + 1],
            header[offset + 2],
            header[offset + 3],
        ])
    };
    let name_len = usize::from(field16(28));
    let extra_len = usize::from(field16(30));
    let comment_len = usize::from(field16(32));
    let name_start = at + CENTRAL_HEADER_LEN;
    let extra_start = name_start + name_len;
    let next = extra_start + extra_len + comment_len;
    if next > end {
        return Err(XdmError::Damaged);
    }
    let mut record = Record {
        name_raw: bytes[name_start..extra_start].to_vec(),
        flags: field16(8),
        made_by_host: header[5],
        external_attributes: field32(38),
        compressed_size: u64::from(field32(20)),
        declared_size: u64::from(field32(24)),
    };
    // APPNOTE §4.5.3: ZIP64 sizes live in extra field 0x0001, each present only when
    // the 32-bit field holds 0xFFFFFFFF, uncompressed size first.
    let wants_uncompressed = record.declared_size == 0xFFFF_FFFF;
    let wants_compressed = record.compressed_size == 0xFFFF_FFFF;
    if wants_uncompressed || wants_compressed {
        let extra = &bytes[extra_start..extra_start + extra_len];
        let zip64 = extra_field(extra, 0x0001).ok_or(XdmError::Damaged)?;
        let mut values = zip64
            .chunks_exact(8)
            .map(|v| u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]));
        if wants_uncompressed {
            record.declared_size = values.next().ok_or(XdmError::Damaged)?;
        }
        if wants_compressed {
            record.compressed_size = values.next().ok_or(XdmError::Damaged)?;
        }
    }
    Ok((record, next))
}

/// The data of the extra field with header `id` (APPNOTE §4.5.1).
fn extra_field(mut extra: &[u8], id: u16) -> Option<&[u8]> {
    while extra.len() >= 4 {
        let header = u16::from_le_bytes([extra[0], extra[1]]);
        let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
        let data = extra.get(4..4 + len)?;
        if header == id {
            return Some(data);
        }
        extra = &extra[4 + len..];
    }
    None
}

/// What is wrong with an entry name, or `None` for a name that may be used. `name` is
/// checked as stored and again as the zip crate decodes it (which may take it from a
/// Unicode path extra field).
pub(super) fn name_fault(name: &[u8]) -> Option<NameFault> {
    if name.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Some(NameFault::ControlCharacter);
    }
    if name.contains(&b'\\') {
        return Some(NameFault::Backslash);
    }
    let drive_letter = name.len() >= 2 && name[0].is_ascii_alphabetic() && name[1] == b':';
    if name.starts_with(b"/") || drive_letter {
        return Some(NameFault::Absolute);
    }
    // A folder entry ends in "/"; that one empty component is allowed.
    let body = name.strip_suffix(b"/").unwrap_or(name);
    let components: Vec<&[u8]> = body.split(|&b| b == b'/').collect();
    if components.iter().any(|c| *c == b"..") {
        return Some(NameFault::ParentFolder);
    }
    if components.iter().any(|c| c.is_empty() || *c == b".") {
        return Some(NameFault::Irregular);
    }
    None
}

/// How many folders and file names a path has.
pub(super) fn depth(name: &str) -> usize {
    name.trim_end_matches('/').split('/').count()
}

/// The name compared without regard to ASCII letter case, without a folder's final `/`.
pub(super) fn key(name: &str) -> String {
    name.trim_end_matches('/').to_ascii_lowercase()
}

/// An entry of an opened package.
#[derive(Debug)]
pub(super) struct Entry {
    /// The name as the zip crate decodes it.
    pub name: String,
    /// [`key`] of the name.
    pub key: String,
    pub is_dir: bool,
    compressed_size: u64,
    declared_size: u64,
}

/// An opened package: every entry judged safe, none inflated yet.
pub(super) struct Archive<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    pub entries: Vec<Entry>,
    /// Bytes that may still be inflated under [`XdmLimits::max_total_size`].
    budget: u64,
    max_total_size: u64,
    max_ratio: u64,
}

impl<'a> Archive<'a> {
    pub(super) fn open(bytes: &'a [u8], limits: &XdmLimits) -> Result<Self, XdmError> {
        let directory = central_directory(bytes, limits)?;
        let records = directory.records;
        check_records(&records, limits)?;
        let zip = ZipArchive::new(Cursor::new(bytes)).map_err(|error| match error {
            ZipError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                XdmError::Truncated
            }
            _ => XdmError::Damaged,
        })?;
        // The crate finds the central directory its own way; it must be the one judged
        // above, or the two readings of the file could differ.
        let same_start = u64::try_from(directory.start)
            .is_ok_and(|start| start == zip.central_directory_start());
        if !same_start || zip.len() != records.len() {
            return Err(XdmError::Damaged);
        }
        let mut entries = Vec::with_capacity(records.len());
        let mut seen = HashSet::new();
        for (index, record) in records.iter().enumerate() {
            let name = zip
                .name_for_index(index)
                .ok_or(XdmError::Damaged)?
                .to_owned();
            if let Some(fault) = name_fault(name.as_bytes()) {
                return Err(XdmError::UnsafeName { name, fault });
            }
            if depth(&name) > limits.max_depth {
                return Err(XdmError::TooDeep {
                    name,
                    limit: limits.max_depth,
                });
            }
            let key = key(&name);
            if !seen.insert(key.clone()) {
                return Err(XdmError::DuplicateName { name });
            }
            entries.push(Entry {
                is_dir: name.ends_with('/'),
                name,
                key,
                compressed_size: record.compressed_size,
                declared_size: record.declared_size,
            });
        }
        Ok(Archive {
            zip,
            entries,
            budget: limits.max_total_size,
            max_total_size: limits.max_total_size,
            max_ratio: limits.max_ratio,
        })
    }

    /// The index of the entry whose [`key`] is `key`.
    pub(super) fn find(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|entry| entry.key == key)
    }

    /// Inflates entry `index`, refusing it as soon as it passes the ratio or the
    /// remaining total budget: at most one byte more than allowed is ever produced.
    pub(super) fn read(&mut self, index: usize) -> Result<Vec<u8>, XdmError> {
        let entry = self.entries.get(index).ok_or(XdmError::Damaged)?;
        let name = entry.name.clone();
        let ratio_cap = entry
            .compressed_size
            .saturating_mul(self.max_ratio)
            .max(RATIO_EXEMPT_BYTES);
        let cap = ratio_cap.min(self.budget);
        let file = self.zip.by_index(index).map_err(|error| match error {
            ZipError::UnsupportedArchive(detail) if detail == ZipError::PASSWORD_REQUIRED => {
                XdmError::Encrypted
            }
            ZipError::UnsupportedArchive(_) => {
                XdmError::UnsupportedCompression { name: name.clone() }
            }
            ZipError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                XdmError::Truncated
            }
            _ => XdmError::Damaged,
        })?;
        // The declared size only sizes the first allocation; it is never trusted as a
        // bound.
        let initial = entry.declared_size.min(cap).min(RATIO_EXEMPT_BYTES);
        let mut out = Vec::with_capacity(usize::try_from(initial).unwrap_or(0));
        file.take(cap.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::UnexpectedEof => XdmError::Truncated,
                _ => XdmError::Damaged,
            })?;
        let produced = u64::try_from(out.len()).unwrap_or(u64::MAX);
        if produced > ratio_cap {
            return Err(XdmError::CompressionRatio { name });
        }
        if produced > self.budget {
            return Err(XdmError::TooLarge {
                limit: self.max_total_size,
            });
        }
        self.budget -= produced;
        Ok(out)
    }
}

/// Judges every record before any data is touched: encryption, links, declared sizes
/// and ratios, and names as stored.
fn check_records(records: &[Record], limits: &XdmLimits) -> Result<(), XdmError> {
    let mut total: u64 = 0;
    let mut seen = HashSet::new();
    for record in records {
        let name = String::from_utf8_lossy(&record.name_raw).into_owned();
        if let Some(fault) = name_fault(&record.name_raw) {
            return Err(XdmError::UnsafeName { name, fault });
        }
        if !seen.insert(key(&name)) {
            return Err(XdmError::DuplicateName { name });
        }
        if record.encrypted() {
            return Err(XdmError::Encrypted);
        }
        if record.is_symlink() {
            return Err(XdmError::Link { name });
        }
        // The declared sizes may lie; these checks only refuse early what the bounded
        // reader would refuse later anyway.
        total = total.saturating_add(record.declared_size);
        if total > limits.max_total_size {
            return Err(XdmError::TooLarge {
                limit: limits.max_total_size,
            });
        }
        if record.declared_size > RATIO_EXEMPT_BYTES
            && record.declared_size > record.compressed_size.saturating_mul(limits.max_ratio)
        {
            return Err(XdmError::CompressionRatio { name });
        }
    }
    Ok(())
}

fn last_position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at + 8)?;
    Some(u64::from_le_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}
